"""Writes a JPEG bomb: a valid progressive JPEG declaring WIDTH x HEIGHT (default 16000 x 16000)
in about 1.5 MB, the frame of issue 25.

    python3 tests/faults/make_bomb.py OUT [WIDTH HEIGHT]

Written by hand (no Pillow needed): SOI, one quantisation table, SOF2 (progressive, 3
components, no subsampling), one DC Huffman table with a single 1-bit code for "difference 0",
one DC-first scan over the three interleaved components, EOI. Every 8 x 8 block costs one 0 bit,
so the scan is WIDTH * HEIGHT * 3 / 64 bits of zeros: 1.5 MB for 16000 x 16000, which passes a
bytes-per-pixel plausibility check (171 pixels a byte) while a decoder that trusts the header
allocates the full image (768 MB of RGB, more for the progressive coefficients). The picture is
uniform grey.
"""
import struct
import sys


def segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def bomb(width, height):
    out = bytearray(b"\xff\xd8")
    out += segment(0xDB, b"\x00" + bytes([1] * 64))  # DQT: table 0, all ones
    comps = b"".join(bytes([cid, 0x11, 0]) for cid in (1, 2, 3))
    out += segment(0xC2, b"\x08" + struct.pack(">HH", height, width) + b"\x03" + comps)  # SOF2
    counts = bytes([1] + [0] * 15)  # one code of length 1 ...
    out += segment(0xC4, b"\x00" + counts + b"\x00")  # DHT: DC table 0, ... for category 0
    scan = b"\x03" + b"".join(bytes([cid, 0x00]) for cid in (1, 2, 3)) + b"\x00\x00\x00"
    out += segment(0xDA, scan)  # SOS: DC first scan (Ss=0, Se=0, Ah=Al=0)
    blocks = ((width + 7) // 8) * ((height + 7) // 8) * 3
    out += bytes((blocks + 7) // 8)  # all-zero bits: never an FF, so no stuffing
    out += b"\xff\xd9"
    return bytes(out)


if __name__ == "__main__":
    w, h = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (16000, 16000)
    with open(sys.argv[1], "wb") as f:
        f.write(bomb(w, h))
