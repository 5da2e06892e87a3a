/*
 * tbcount: a qemu (user-mode) TCG plugin that counts the guest instructions executed per
 * translated block, keyed by the block's first guest PC. Used by benches/arm-profile.sh.
 *
 *   qemu-aarch64 -plugin libtbcount.so,out=FILE ... BINARY ARGS
 *
 * At exit FILE gets:
 *   "# guest_base 0xH"            host address minus guest address (0 when qemu maps 1:1)
 *   "# map LO HI OFFSET PATH"     every file-backed mapping of the qemu process, shifted to
 *                                 guest addresses (host /proc/self/maps minus guest_base), so
 *                                 the script can tell where the PIE binary and libc were loaded
 *   "PC INSNS EXECS SYMBOL"       one line per translated block (start PC in hex, length):
 *                                 instructions executed in it, times it was entered, and
 *                                 qemu's own symbol for PC, or "-" (a cross-check for the
 *                                 script's PIE load-address arithmetic)
 * Built against qemu-plugin.h of the installed qemu-user's source version (plugin API v1).
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    uint64_t pc;    /* first guest PC of the block */
    uint64_t n;     /* instructions in this translation of the block */
    uint64_t insns; /* instructions executed (n per entry) */
    uint64_t execs; /* entries */
    const char *sym;
} Block;

static GHashTable *blocks; /* (pc, n) -> Block*; a PC retranslated with another length gets
                              its own entry (the script merges them) */
static GMutex lock;
static char *out_path;
static uint64_t guest_base;
static gboolean have_base;

static void tb_exec(unsigned int cpu, void *udata)
{
    Block *b = udata;
    /* guest threads run on parallel host threads: atomic adds */
    __atomic_fetch_add(&b->insns, b->n, __ATOMIC_RELAXED);
    __atomic_fetch_add(&b->execs, 1, __ATOMIC_RELAXED);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t pc = qemu_plugin_tb_vaddr(tb), n = qemu_plugin_tb_n_insns(tb);
    struct qemu_plugin_insn *first = qemu_plugin_tb_get_insn(tb, 0);
    uint64_t key = pc * 1024 + n; /* n <= 512 (TCG_MAX_INSNS); guest PCs < 2^48 */

    g_mutex_lock(&lock);
    if (!have_base && qemu_plugin_insn_haddr(first)) {
        /* user mode: host address = guest address + guest_base */
        guest_base = (uint64_t)(uintptr_t)qemu_plugin_insn_haddr(first) - pc;
        have_base = TRUE;
    }
    Block *b = g_hash_table_lookup(blocks, &key);
    if (!b) {
        uint64_t *k = g_new(uint64_t, 1);
        *k = key;
        b = g_new0(Block, 1);
        b->pc = pc;
        b->n = n;
        b->sym = qemu_plugin_insn_symbol(first);
        g_hash_table_insert(blocks, k, b);
    }
    g_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, tb_exec, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    FILE *f = fopen(out_path, "w");
    if (!f) {
        qemu_plugin_outs("tbcount: cannot open out file\n");
        return;
    }
    fprintf(f, "# guest_base 0x%" PRIx64 "\n", guest_base);
    /* file-backed mappings, from host to guest addresses */
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096];
    while (maps && fgets(line, sizeof line, maps)) {
        uint64_t lo, hi, off;
        char perms[8], path[4000] = "";
        if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %*s %*s %3999[^\n]",
                   &lo, &hi, perms, &off, path) >= 4 && path[0] == '/' && lo >= guest_base) {
            fprintf(f, "# map 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " %s %s\n",
                    lo - guest_base, hi - guest_base, off, perms, path);
        }
    }
    if (maps) {
        fclose(maps);
    }
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, blocks);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        Block *b = v;
        if (b->execs) {
            fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 " %s\n", b->pc, b->insns, b->execs,
                    b->sym ? b->sym : "-");
        }
    }
    fclose(f);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "out=")) {
            out_path = g_strdup(argv[i] + 4);
        }
    }
    if (!out_path) {
        fprintf(stderr, "tbcount: missing out=FILE argument\n");
        return -1;
    }
    blocks = g_hash_table_new(g_int64_hash, g_int64_equal);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
