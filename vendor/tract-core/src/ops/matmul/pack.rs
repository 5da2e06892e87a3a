use crate::axes::Axis;
use crate::internal::*;
use ndarray::*;
use tract_linalg::block_quant::{
    BlockQuantStorage, PackedBlockQuantFact, PackedBlockQuantFormat, block_quant_slice,
};
use tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_linalg::pack::PackedI8K4;

use super::ModePicker;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OptMatMulPack {
    pub(crate) packers: Vec<Box<dyn MMMInputFormat>>,
    pub(crate) mode_picker: ModePicker,
    pub(crate) k_axis: usize,
    pub(crate) mn_axis: usize,
}

impl Op for OptMatMulPack {
    fn name(&self) -> StaticName {
        "OptMatMulPack".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}. k axis: {}, mn axis: {}", self.packers, self.k_axis, self.mn_axis)])
    }

    op_as_typed_op!();
}

impl EvalOp for OptMatMulPack {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.do_eval(ctx, inputs.remove(0))
    }
}

impl TypedOp for OptMatMulPack {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        match self.mode_picker {
            ModePicker::Single => ensure!(self.packers.len() == 1),
            ModePicker::VecVsMat => ensure!(self.packers.len() == 2),
        }
        let k = inputs[0].shape[self.k_axis].clone();
        let mn = inputs[0].shape[self.mn_axis].clone();
        let exotic_fact = DynPackedExoticFact { k, mn, packers: self.packers.clone() };
        Ok(tvec!(
            inputs[0]
                .datum_type
                .fact(self.output_shape(&inputs[0].shape))
                .with_exotic_fact(exotic_fact)
        ))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        let mut axes: Vec<Axis> = (0..inputs[0].rank())
            .filter(|&ix| ix != self.k_axis && ix != self.mn_axis)
            .enumerate()
            .zip('a'..)
            .map(|((o, i), repr)| Axis::new(repr, 1, 1).input(0, i).output(0, o))
            .collect();
        axes.push(Axis::new('K', 1, 1).input(0, self.k_axis));
        axes.push(Axis::new('M', 1, 1).input(0, self.mn_axis));
        axes.push(Axis::new('P', 1, 1).output(0, outputs[0].rank()));
        AxesMapping::new(1, 1, axes)
    }

    as_op!();
}

impl OptMatMulPack {
    fn do_eval(&self, _ctx: &EvalContext, input: TValue) -> TractResult<TVec<TValue>> {
        let mode = self.mode_picker.pick(input.shape()[self.mn_axis])?;
        let packer = &self.packers[mode];
        let output_shape: TVec<usize> = self.output_shape(input.shape());
        if let Some(strided) = packer.downcast_ref::<tract_linalg::strided_panel::StridedKMajor>() {
            // Share the activation allocation. A copy here is the pack this format exists to skip.
            let arc = input.as_arc_tensor().unwrap().clone();
            let values = if output_shape.iter().all(|d| *d == 1) {
                tvec![strided.panel_from_arc(arc, 0, self.k_axis, self.mn_axis)?]
            } else {
                let mut bc_shape: TVec<usize> = input.shape().into();
                bc_shape[self.k_axis] = 1;
                bc_shape[self.mn_axis] = 1;
                let mut values: TVec<Box<dyn MMMInputValue>> =
                    TVec::with_capacity(output_shape.iter().product());
                for coord in indices(&*bc_shape) {
                    let offset = coord
                        .as_array_view()
                        .iter()
                        .zip(input.strides())
                        .map(|(x, s)| *x as isize * s)
                        .sum::<isize>()
                        * input.datum_type().size_of() as isize;
                    values.push(strided.panel_from_arc(
                        arc.clone(),
                        offset,
                        self.k_axis,
                        self.mn_axis,
                    )?);
                }
                values
            };
            let stores = PackedMatrixStorage::new_batched(&output_shape, values)
                .into_tensor(input.datum_type());
            return Ok(tvec!(stores.into_tvalue()));
        }
        unsafe {
            let stores = if output_shape.iter().all(|d| *d == 1) {
                // edgeclip patch: through `prepare_one_view` below (int8 rows packed by words).
                let packed = prepare_one_view(&**packer, &input.view(), self.k_axis, self.mn_axis)?;
                PackedMatrixStorage::new_batched(&output_shape, tvec![packed])
                    .into_tensor(input.datum_type())
            } else {
                let mut bc_shape: TVec<usize> = input.shape().into();
                bc_shape[self.k_axis] = 1;
                bc_shape[self.mn_axis] = 1;

                let mut values: TVec<Box<dyn MMMInputValue>> =
                    TVec::with_capacity(output_shape.iter().product());
                for coord in indices(&*bc_shape) {
                    let offset = coord
                        .as_array_view()
                        .iter()
                        .zip(input.strides())
                        .map(|(x, s)| *x as isize * s)
                        .sum::<isize>()
                        * input.datum_type().size_of() as isize;
                    let view =
                        TensorView::from_bytes(&input, offset, input.shape(), input.strides());
                    // edgeclip patch: as above.
                    values.push(prepare_one_view(&**packer, &view, self.k_axis, self.mn_axis)?);
                }
                PackedMatrixStorage::new_batched(&output_shape, values)
                    .into_tensor(input.datum_type())
            };
            Ok(tvec!(stores.into_tvalue()))
        }
    }

    pub fn output_shape<D: DimLike>(&self, input: &[D]) -> TVec<D> {
        let mut packed_shape: TVec<D> = input.into();
        packed_shape.remove(self.mn_axis.max(self.k_axis));
        packed_shape.remove(self.mn_axis.min(self.k_axis));
        packed_shape
    }
}

#[derive(Hash, Clone, Debug, PartialEq, Eq)]
pub struct DynPackedExoticFact {
    pub k: TDim,
    pub mn: TDim,
    pub packers: Vec<Box<dyn MMMInputFormat>>,
}

impl ExoticFact for DynPackedExoticFact {
    fn buffer_sizes(&self) -> TVec<TDim> {
        tvec!(self.packers[0].mem_size(self.k.clone(), self.mn.clone()))
    }
}

#[derive(Debug, Clone, Hash, Eq, PartialEq)]
pub struct OptSimpleMatMulPack {
    pub(crate) packed_format: PackedBlockQuantFormat,
    pub(crate) k: usize,
    pub(crate) m: usize,
}

impl Op for OptSimpleMatMulPack {
    fn name(&self) -> StaticName {
        "OptSimpleMatMulPack".into()
    }
    op_as_typed_op!();
}

impl EvalOp for OptSimpleMatMulPack {
    op_out_of_plan!();

    fn state(&self, _ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        Ok(None)
    }

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let bqs = input.try_storage_as::<BlockQuantStorage>()?;
        // Leading dims before the last 2 (M, K) are batch/group dims
        let num_groups: usize = input.shape()[..input.rank().saturating_sub(2)].iter().product();
        let m_per_group = input.shape()[input.rank() - 2];
        let k = *input.shape().last().unwrap();
        let values = (0..num_groups)
            .map(|g| {
                let slice = block_quant_slice(bqs.value(), bqs.format(), m_per_group, k, g);
                let iv: Box<dyn MMMInputValue> = Box::new(self.packed_format.pack(slice, k)?);
                Ok(iv)
            })
            .collect::<TractResult<TVec<_>>>()?;
        let leading_shape = &input.shape()[..input.rank().saturating_sub(2)];
        let output =
            PackedMatrixStorage::new_batched(leading_shape, values).into_tensor(input.datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for OptSimpleMatMulPack {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs[0];
        // Input shape is [G, M, K] — output removes M and K, keeping leading dims
        let output_shape: TVec<TDim> = if input.rank() > 2 {
            input.shape[..input.rank() - 2].to_vec().into()
        } else {
            tvec!()
        };
        let fact =
            inputs[0].datum_type.fact(&*output_shape).with_exotic_fact(PackedBlockQuantFact {
                format: self.packed_format.clone(),
                shape: tvec!(self.m, self.k),
            });
        Ok(tvec!(fact))
    }

    as_op!();
}

/// edgeclip patch: `packer.prepare_one_view(view, k_axis, mn_axis)`, with the K=4-inner int8
/// layout of the dot-product kernels (`PackedI8K4`) packed by [`pack_i8k4_k_contiguous`] when
/// the view's k axis is contiguous, and every `PackedI8K4` buffer followed by the bytes that
/// tract-linalg's AMX kernels read past it ([`i8k4_read_slack`]; that part is a fix, on
/// whatever `TRACT_EDGECLIP_PATCHES_OFF` says).
fn prepare_one_view(
    packer: &dyn MMMInputFormat,
    view: &TensorView,
    k_axis: usize,
    mn_axis: usize,
) -> TractResult<Box<dyn MMMInputValue>> {
    let Some(i8k4) = packer.downcast_ref::<PackedI8K4>() else {
        return packer.prepare_one_view(view, k_axis, mn_axis);
    };
    if crate::edgeclip_patches::on()
        && let Some(packed) = pack_i8k4_k_contiguous(i8k4, view, k_axis, mn_axis)
    {
        return Ok(packed);
    }
    let packed = i8k4.pack_view(view, k_axis, mn_axis)?;
    let k = view.shape()[k_axis];
    let slack = i8k4_read_slack(k, i8k4.r);
    match packed.downcast_ref::<EagerPackedInput>() {
        Some(eager) if slack > 0 => {
            let len = eager.packed.len();
            let mut blob = unsafe { Blob::new_for_size_and_align(len + slack, i8k4.align) };
            blob.as_bytes_mut()[..len].copy_from_slice(eager.packed.as_bytes());
            blob.as_bytes_mut()[len..].fill(0);
            Ok(Box::new(EagerPackedInput { packed: blob.into(), ..eager.clone() }))
        }
        _ => Ok(packed),
    }
}

/// edgeclip fix: how many bytes past the end of a `PackedI8K4` buffer of depth `k` and panel
/// width `r` tract-linalg 0.23.9's x86-64 AMX int8 kernels may read, so that every such buffer
/// is allocated (and zeroed) that much longer.
///
/// `avx512amx_mmm_i32_16x16` and `_8x8` (`x86_64/fma/avx512amx_mmm_i32_*.S.j2`) load their B
/// operand, a `PackedI8K4` panel, as one AMX tile per 64 values of k (16 blocks of four rows of
/// `4 * r` bytes, `tileloaddt1`), `ceil(k / 64)` times. A panel holds `ceil(k / 4) * 4 * r`
/// bytes, so unless k is a multiple of 64 the last load runs `(ceil(k / 64) * 64 -
/// ceil(k / 4) * 4) * r` bytes (at most `60 * r`) past the panel. Inside a buffer that reads the
/// next panel, past the last one it reads beyond the allocation: harmless to the result (the A
/// tile, `PackedAmxA`, is zero over those k), but a segmentation fault when the buffer ends
/// near the end of a mapped page. It crashed 1 run in 12 of edgeclip's `tests/snapshots.rs`
/// (the demo's int8 convolutions, two inferences on two threads) on a Sapphire Rapids CPU, with
/// tract as released as much as patched. Zero on other targets: their kernels read within the
/// panel. Drop it when tract-linalg pads its AMX B operand (or reads the last tile with fewer
/// rows).
pub fn i8k4_read_slack(k: usize, r: usize) -> usize {
    if cfg!(target_arch = "x86_64") { (k.div_ceil(64) * 64 - k.div_ceil(4) * 4) * r } else { 0 }
}

/// edgeclip patch: `PackedI8K4::pack_view` (tract-linalg `src/frame/pack.rs`) for a view of
/// bytes whose k axis is contiguous (stride 1): the same bytes, a word or sixteen bytes at a time.
/// `None` for any other view (another element size, a strided k axis, equal axes), which
/// `pack_view` packs.
///
/// The layout puts `src[mn, k]` at `panel * r * kp + (k / 4) * r * 4 + (mn % r) * 4 + k % 4`
/// (`kp`: k rounded up to 4), so the four values of one row at `k = 4b .. 4b + 3` are one 4-byte
/// word of the panel (`pack_view` stores one byte per step, stepping down the mn axis). In a
/// whole panel (`r` rows, `r` a multiple of 4), each four rows' next 16 bytes are transposed as
/// a 4x4 matrix of words ([`transpose_words_4x4`]: `TRN` on Arm, unpacks on x86-64); the rest
/// (the last panel when narrower, a k that is not a multiple of 16) is copied a word at a time.
/// The word that holds a row's last `k % 4` values is padded with zeros, and the lanes of the
/// last panel beyond `mn` are zeros, as `pack_view`'s zeroed blob leaves them. This is the
/// packing of dynamic-int8 towers' activations (onnxruntime's `quantize_dynamic`) at every
/// matrix product, each row contiguous in k.
pub fn pack_i8k4_k_contiguous(
    format: &PackedI8K4,
    view: &TensorView,
    k_axis: usize,
    mn_axis: usize,
) -> Option<Box<dyn MMMInputValue>> {
    if view.datum_type().size_of() != 1 || k_axis == mn_axis || view.strides()[k_axis] != 1 {
        return None;
    }
    let (k, mn, r) = (view.shape()[k_axis], view.shape()[mn_axis], format.r);
    let kp = k.div_ceil(4) * 4;
    let panel_len = kp * r;
    let mn_stride = view.strides()[mn_axis];
    let packed_len = mn.div_ceil(r) * panel_len;
    let slack = i8k4_read_slack(k, r);
    let mut blob = unsafe { Blob::new_for_size_and_align(packed_len + slack, format.align) };
    blob.as_bytes_mut()[packed_len..].fill(0);
    if panel_len > 0 {
        let src = unsafe { view.as_ptr_unchecked::<u8>() };
        // Safety: row `m` of the view, its k values contiguous.
        let row =
            |m: usize| unsafe { std::slice::from_raw_parts(src.offset(m as isize * mn_stride), k) };
        for (p, panel) in blob.as_bytes_mut()[..packed_len].chunks_exact_mut(panel_len).enumerate()
        {
            let width = r.min(mn - p * r);
            let mut first_word = 0;
            if width == r && r % 4 == 0 {
                let quads = k / 16;
                for group in 0..r / 4 {
                    let rows: [&[u8]; 4] = std::array::from_fn(|i| row(p * r + 4 * group + i));
                    for q in 0..quads {
                        // Safety: bytes 16q .. 16q + 16 of each row (16q + 16 <= k); words
                        // 4q .. 4q + 3 of lanes 4 group .. 4 group + 3, within the panel.
                        unsafe {
                            transpose_words_4x4(
                                rows.map(|row| row.as_ptr().add(16 * q)),
                                panel.as_mut_ptr().add(16 * q * r + 16 * group),
                                4 * r,
                            )
                        };
                    }
                }
                first_word = 4 * quads;
            } else if width < r {
                panel.fill(0);
            }
            for lane in 0..width {
                copy_row_words(row(p * r + lane), panel, r, lane, first_word);
            }
        }
    }
    Some(Box::new(EagerPackedInput {
        fact: PackedExoticFact { format: Box::new(format.clone()), mn: mn.to_dim(), k },
        packed: blob.into(),
        panel_bytes: panel_len,
        mn,
    }))
}

/// edgeclip patch: the words of `row` from `first_word` on into lane `lane` of a K=4-inner
/// panel of `r` lanes, the last one (`row.len() % 4` values) padded with zeros.
fn copy_row_words(row: &[u8], panel: &mut [u8], r: usize, lane: usize, first_word: usize) {
    let mut blocks = panel.chunks_exact_mut(4 * r).skip(first_word);
    let words = row.chunks_exact(4);
    let tail = words.remainder();
    for (word, block) in words.skip(first_word).zip(&mut blocks) {
        block[4 * lane..4 * lane + 4].copy_from_slice(word);
    }
    if let Some(block) = blocks.next() {
        let lane = &mut block[4 * lane..4 * lane + 4];
        lane.fill(0);
        lane[..tail.len()].copy_from_slice(tail);
    }
}

/// edgeclip patch: reads 16 bytes (four words) at each of `rows` and writes word `j` of the
/// four rows, in row order, as 16 bytes at `out + j * out_stride`. aarch64: `TRN1`/`TRN2` on
/// words then on double words.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn transpose_words_4x4(rows: [*const u8; 4], out: *mut u8, out_stride: usize) {
    use std::arch::aarch64::*;
    unsafe {
        let [a, b, c, d] = rows.map(|row| vreinterpretq_u32_u8(vld1q_u8(row)));
        // ab0 = a0 b0 a2 b2, ab1 = a1 b1 a3 b3 (and cd likewise).
        let (ab0, ab1) = (vtrn1q_u32(a, b), vtrn2q_u32(a, b));
        let (cd0, cd1) = (vtrn1q_u32(c, d), vtrn2q_u32(c, d));
        let (ab0, ab1) = (vreinterpretq_u64_u32(ab0), vreinterpretq_u64_u32(ab1));
        let (cd0, cd1) = (vreinterpretq_u64_u32(cd0), vreinterpretq_u64_u32(cd1));
        let words = [
            vtrn1q_u64(ab0, cd0),
            vtrn1q_u64(ab1, cd1),
            vtrn2q_u64(ab0, cd0),
            vtrn2q_u64(ab1, cd1),
        ];
        for (j, word) in words.into_iter().enumerate() {
            vst1q_u8(out.add(j * out_stride), vreinterpretq_u8_u64(word));
        }
    }
}

/// x86-64: SSE2 unpacks of words, then of double words.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose_words_4x4(rows: [*const u8; 4], out: *mut u8, out_stride: usize) {
    use std::arch::x86_64::*;
    unsafe {
        let [a, b, c, d] = rows.map(|row| _mm_loadu_si128(row as *const __m128i));
        // ab_lo = a0 b0 a1 b1, ab_hi = a2 b2 a3 b3 (and cd likewise).
        let (ab_lo, ab_hi) = (_mm_unpacklo_epi32(a, b), _mm_unpackhi_epi32(a, b));
        let (cd_lo, cd_hi) = (_mm_unpacklo_epi32(c, d), _mm_unpackhi_epi32(c, d));
        let words = [
            _mm_unpacklo_epi64(ab_lo, cd_lo),
            _mm_unpackhi_epi64(ab_lo, cd_lo),
            _mm_unpacklo_epi64(ab_hi, cd_hi),
            _mm_unpackhi_epi64(ab_hi, cd_hi),
        ];
        for (j, word) in words.into_iter().enumerate() {
            _mm_storeu_si128(out.add(j * out_stride) as *mut __m128i, word);
        }
    }
}

/// Elsewhere: word by word.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
#[inline(always)]
unsafe fn transpose_words_4x4(rows: [*const u8; 4], out: *mut u8, out_stride: usize) {
    for (i, row) in rows.into_iter().enumerate() {
        for j in 0..4 {
            unsafe {
                std::ptr::copy_nonoverlapping(row.add(4 * j), out.add(j * out_stride + 4 * i), 4)
            };
        }
    }
}
