use tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, MatMatMul, PackedExoticFact,
    PackedMatrixStorage,
};
use tract_linalg::pack::{PackedFormat, PackedI8K4, PackingWriter};

use crate::internal::*;
use ndarray::prelude::*;
use num_integer::Integer;

use crate::ops::cnn::pools::{ConcretePoolGeometry, PoolGeometry};
use crate::ops::cnn::{GeometryBound, PoolSpec, ResolveTo};
use crate::ops::nn::{BaseDataShape, DataFormat, DataShape};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Im2Col {
    pub pool_spec: PoolSpec,
    pub group: usize,
    geometry: GeometryBound<SymbolicGeometry, ConcreteGeometry>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct SymbolicGeometry {
    group: usize,
    pool_spec: PoolSpec,
    pool_geometry: PoolGeometry,
    // The kernel's activation packing: PackedFormat (K-major) or PackedI8K4 (K=4-inner).
    out_format: Box<dyn MMMInputFormat>,
    k: usize,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct ConcreteGeometry {
    pool: ConcretePoolGeometry,
    pub n: usize,
    k: usize,
    pub out_format: Box<dyn MMMInputFormat>,
    pub ci_per_group: usize,
    patcher: Patcher,
    input_shape_with_n: DataShape,
    packed_shape: TVec<usize>, // always Batch,Group
}

impl GeometryBound<SymbolicGeometry, ConcreteGeometry> {
    pub fn out_format(&self) -> &dyn MMMInputFormat {
        match self {
            GeometryBound::Symbolic(s) => &*s.out_format,
            GeometryBound::Concrete(s) => &*s.out_format,
        }
    }
    pub fn k(&self) -> usize {
        match self {
            GeometryBound::Symbolic(s) => s.k,
            GeometryBound::Concrete(s) => s.k,
        }
    }
}

impl ResolveTo<ConcreteGeometry> for SymbolicGeometry {
    type Param = [usize];
    fn resolve(&self, input_full_shape: &[usize]) -> TractResult<ConcreteGeometry> {
        let pool = self.pool_geometry.to_concrete(input_full_shape)?.into_owned();
        let patcher = match (pool.patch.rank(), pool.patch.padded) {
            (1, false) => Patcher::Valid1d,
            (1, true) => Patcher::Padded1d,
            (2, false) => Patcher::Valid2d,
            (2, true) => Patcher::Padded2d,
            _ => Patcher::Generic,
        };
        let ci_per_group = pool.input_shape.c_dim() / self.group;
        let n = pool.output_shape.hw_dims().iter().product();
        let input_shape_with_n = match self.pool_spec.data_format {
            DataFormat::HWC => DataFormat::NHWC.from_n_c_hw(
                1,
                *pool.input_shape.c(),
                pool.input_shape.hw_dims(),
            )?,
            DataFormat::CHW => DataFormat::NCHW.from_n_c_hw(
                1,
                *pool.input_shape.c(),
                pool.input_shape.hw_dims(),
            )?,
            _ => pool.input_shape.clone(),
        };
        let packed_shape = Im2Col::packed_shape(&pool.input_shape, self.group)?;
        Ok(ConcreteGeometry {
            pool,
            n,
            k: self.k,
            ci_per_group,
            out_format: self.out_format.clone(),
            patcher,
            input_shape_with_n,
            packed_shape,
        })
    }
}

impl Im2Col {
    pub fn new(
        pool_spec: PoolSpec,
        group: usize,
        k: usize,
        input_full_shape: &ShapeFact,
        mmm: Box<dyn MatMatMul>,
        packing: usize,
    ) -> TractResult<Im2Col> {
        let out_format = dyn_clone::clone_box(&*mmm.packings()[packing].1);
        let pool_geometry = pool_spec.compute_geo(input_full_shape)?;
        let geometry: GeometryBound<_, _> =
            SymbolicGeometry { group, pool_spec: pool_spec.clone(), pool_geometry, out_format, k }
                .into();
        let geometry = geometry.optimize_if(input_full_shape.as_concrete())?;
        Ok(Im2Col { pool_spec, group, geometry })
    }

    // packed shape is Batch,Group
    fn packed_shape<D: DimLike>(
        input_shape: &BaseDataShape<D, TVec<D>>,
        group: usize,
    ) -> TractResult<TVec<D>> {
        let mut output_shape: TVec<D> = tvec!();
        output_shape.push(input_shape.n().cloned().unwrap_or_else(|| 1.into()));
        output_shape.push(group.into());
        Ok(output_shape)
    }
}

impl Op for Im2Col {
    fn name(&self) -> StaticName {
        "Im2col".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("groups:{}", self.group)])
    }

    op_as_typed_op!();
}

impl EvalOp for Im2Col {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let geometry = self.geometry.to_concrete(inputs[0].shape())?;
        unsafe {
            let mut input = inputs.remove(0).into_tensor();
            let pad_value: Option<&Tensor> = if inputs.len() > 0 { Some(&inputs[0]) } else { None };
            if !self.pool_spec.data_format.has_n() {
                input.insert_axis(0)?;
            }
            let dt = input.datum_type();
            let r = geometry.out_format.r();
            // Buffer geometry. zero_init for PackedI8K4: the K=4-inner writer skips
            // the K-padding lanes (k..k_aligned), which SMOPA accumulates — they must
            // be 0. PackedFormat has no K padding; its mn-padding lanes are computed
            // on (then discarded) by the kernel, so the partial last panel still
            // needs zeroing — garbage there decodes to denormals that stall the fp
            // pipeline. Done after allocation below.
            // edgeclip fix: a `PackedI8K4` buffer is followed by the bytes that tract-linalg's
            // AMX kernels read past it (`read_slack`, zeroed with the rest; see
            // `i8k4_read_slack`).
            let (single_panel_len, buf_align, zero_init, read_slack) =
                if let Some(pf) = geometry.out_format.downcast_ref::<PackedFormat>() {
                    (pf.single_panel_len(geometry.k), pf.alignment(), false, 0)
                } else if let Some(p4) = geometry.out_format.downcast_ref::<PackedI8K4>() {
                    let slack = crate::ops::matmul::pack::i8k4_read_slack(geometry.k, p4.r);
                    (p4.single_panel_len(geometry.k), p4.alignment(), true, slack)
                } else {
                    bail!("Im2Col: unsupported packing format {:?}", geometry.out_format)
                };
            let panel_bytes = single_panel_len * dt.size_of();

            let n_batches = *geometry.input_shape_with_n.n().unwrap_or(&1);
            let n_groups = self.group;
            let mut values: TVec<Box<dyn MMMInputValue>> =
                TVec::with_capacity(n_batches * n_groups);

            for i in 0..n_batches {
                let input = input.view_at_prefix(&[i])?;
                for g in 0..n_groups {
                    let n =
                        if geometry.pool.output_shape.shape.contains(&0) { 0 } else { geometry.n };
                    let mut data = Tensor::uninitialized_aligned_dt(
                        dt,
                        &[n.divceil(r) * single_panel_len + read_slack],
                        buf_align,
                    )?;
                    if zero_init {
                        data.as_bytes_mut().fill(0);
                    } else if n % r != 0 {
                        data.as_bytes_mut()[(n / r) * panel_bytes..].fill(0);
                    }
                    if n > 0 {
                        dispatch_copy_by_size!(Patcher::patch(dt)(
                            &geometry.patcher,
                            &geometry,
                            &input,
                            &mut data.view_mut(),
                            g,
                            pad_value
                        ))?;
                    }
                    values.push(Box::new(EagerPackedInput {
                        fact: PackedExoticFact {
                            format: geometry.out_format.clone(),
                            k: geometry.k,
                            mn: n.to_dim(),
                        },
                        packed: data.into_blob()?.into(),
                        panel_bytes: if n > 0 { panel_bytes } else { 0 },
                        mn: n,
                    }));
                }
            }

            let output = PackedMatrixStorage::new_batched(&geometry.packed_shape, values)
                .into_tensor(input.datum_type());
            Ok(tvec!(output.into_tvalue()))
        }
    }
}

impl TypedOp for Im2Col {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input_shape = self.pool_spec.data_format.shape(inputs[0].shape.to_tvec())?;
        let output_shape = self.pool_spec.output_shape(&inputs[0].shape)?;
        let mn = output_shape.hw_dims().iter().product::<TDim>();
        let pof = PackedExoticFact {
            format: dyn_clone::clone_box(self.geometry.out_format()),
            k: self.geometry.k(),
            mn,
        };
        Ok(tvec!(
            inputs[0]
                .datum_type
                .fact(&[input_shape.n().cloned().unwrap_or(1.into()), self.group.into()])
                .with_exotic_fact(pof)
        ))
    }

    fn declutter(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        let input_fact = model.outlet_fact(node.inputs[0])?;
        if node.inputs.len() == 2
            && model.outlet_fact(node.inputs[1])?.konst.as_ref().and_then(|t| t.as_uniform())
                == Some(Tensor::zero_scalar_dt(input_fact.datum_type)?)
        {
            Ok(Some(
                TypedModelPatch::replace_single_op(model, node, &node.inputs[0..1], self.clone())?
                    .with_context("b0 is zero"),
            ))
        } else {
            Ok(None)
        }
    }
}

#[derive(Copy, Clone, Debug, Hash, PartialEq, Eq)]
enum Patcher {
    Generic,
    Valid1d,
    Valid2d,
    Padded1d,
    Padded2d,
}

impl Patcher {
    fn patch<'p, T: Copy + Datum + num_traits::Zero>(
        &self,
        geo: &'p ConcreteGeometry,
        input: &TensorView,
        pack: &'p mut TensorView,
        g: usize,
        pad_value: Option<&Tensor>,
    ) -> TractResult<()> {
        // Pick the packing writer for the kernel's output format, then run the
        // (writer-generic) patcher. PackedFormat keeps the K-major fast path;
        // PackedI8K4 writes the SMOPA K=4-inner layout in the same single pass.
        let ptr = unsafe { pack.as_slice_mut_unchecked::<T>().as_mut_ptr() };
        if matches!(self, Patcher::Padded2d | Patcher::Valid2d) && crate::edgeclip_patches::on() {
            // edgeclip patch: gather by rows, then copy them into the panels (`rows_2d`).
            let layout = if let Some(pf) = geo.out_format.downcast_ref::<PackedFormat>() {
                Some(RowsLayout::KOuter { r: pf.r, panel_len: pf.single_panel_len(geo.k) })
            } else {
                geo.out_format.downcast_ref::<PackedI8K4>().map(|p4| RowsLayout::K4Inner {
                    r: p4.r,
                    panel_len: p4.single_panel_len(geo.k),
                })
            };
            if let Some(layout) = layout {
                let zero = Tensor::zero_scalar::<T>()?;
                let pad_value: T = unsafe { *pad_value.unwrap_or(&zero).to_scalar_unchecked() };
                unsafe { Self::rows_2d::<T>(geo, input, g, pad_value, ptr, layout) };
                return Ok(());
            }
        }
        if let Some(pf) = geo.out_format.downcast_ref::<PackedFormat>() {
            let mut w = pf.write_with_k_outer(ptr, geo.k, geo.n);
            self.run::<T, _>(geo, input, g, pad_value, &mut w)
        } else if let Some(p4) = geo.out_format.downcast_ref::<PackedI8K4>() {
            let mut w = p4.write_with_k_outer(ptr, geo.k, geo.n);
            self.run::<T, _>(geo, input, g, pad_value, &mut w)
        } else {
            bail!("Im2Col: unsupported packing format {:?}", geo.out_format)
        }
    }

    fn run<T: Copy + Datum + num_traits::Zero, W: PackingWriter<T>>(
        &self,
        geo: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        pad_value: Option<&Tensor>,
        writer: &mut W,
    ) -> TractResult<()> {
        match self {
            Patcher::Valid1d => Self::valid_1d::<T, W>(geo, input, g, writer),
            Patcher::Valid2d => Self::valid_2d::<T, W>(geo, input, g, writer),
            Patcher::Padded1d => Self::padded_1d::<T, W>(
                geo,
                input,
                g,
                pad_value.unwrap_or(&Tensor::zero_scalar::<T>()?),
                writer,
            ),
            Patcher::Padded2d => Self::padded_2d::<T, W>(
                geo,
                input,
                g,
                pad_value.unwrap_or(&Tensor::zero_scalar::<T>()?),
                writer,
            ),
            _ => Self::generic::<T, W>(
                geo,
                input,
                g,
                pad_value.unwrap_or(&Tensor::zero_scalar::<T>()?),
                writer,
            ),
        }
    }

    #[inline(never)]
    fn generic<T: Copy + Datum, W: PackingWriter<T>>(
        geometry: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        pad_value: &Tensor,
        writer: &mut W,
    ) -> TractResult<()> {
        unsafe {
            let pad_value = *pad_value.to_scalar_unchecked();
            let mut mega_matrix = Tensor::uninitialized::<T>(&[geometry.k, geometry.n])?;
            let mut mega_matrix_view = mega_matrix.to_array_view_mut_unchecked::<T>();
            let ptr = input.as_ptr_unchecked::<T>();
            let ptr = ptr.add(geometry.input_shape_with_n.c_stride() * (g * geometry.ci_per_group));
            for (spatial, mut col) in ndarray::indices(&*geometry.pool.patch.output_shape)
                .into_iter()
                .zip(mega_matrix_view.axis_iter_mut(Axis(1)))
            {
                let mut col = col.iter_mut();
                for ci in 0..geometry.ci_per_group {
                    let ptr = ptr.add(geometry.input_shape_with_n.c_stride() * ci);
                    for v in geometry.pool.patch.at(spatial.slice()) {
                        *col.next().expect("geometry error in conv") =
                            v.map(|o| *ptr.offset(o)).unwrap_or(pad_value);
                    }
                }
            }
            // mega_matrix is [k, n] (k-major); feed K-outer to the writer, which
            // lays out the kernel's packing (K-major for PackedFormat, K=4-inner
            // for PackedI8K4) — byte-identical to PackedFormat::pack for the former.
            let mv = mega_matrix.as_slice_unchecked::<T>();
            for kk in 0..geometry.k {
                writer.write_slice(&mv[kk * geometry.n..(kk + 1) * geometry.n]);
            }
            Ok(())
        }
    }

    #[inline(never)]
    fn valid_1d<T: Copy + Datum, W: PackingWriter<T>>(
        geometry: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        writer: &mut W,
    ) -> TractResult<()> {
        unsafe {
            let x_stride = *geometry.input_shape_with_n.h_stride() as isize
                * geometry.pool.patch.spec.strides[0] as isize;
            let c_stride = *geometry.input_shape_with_n.c_stride() as isize;
            let iptr = input.as_ptr_unchecked::<T>();
            let iptr = iptr.add(g * geometry.ci_per_group * geometry.input_shape_with_n.c_stride());
            let output_x = *geometry.pool.patch.output_shape.get_unchecked(0);
            // Fast path: stride-1 contiguous read along x. Replaces the
            // per-element pointer-arithmetic loop with a single write_slice
            // (memcpy when the slice fits in the current panel).
            // Byte-identical to the slow path (write_slice's contract).
            let contiguous_x = x_stride == 1;
            for ci in 0..geometry.ci_per_group {
                let iptr = iptr.offset(ci as isize * c_stride);
                for koffset in &geometry.pool.patch.standard_layout_data_field {
                    let iptr = iptr.offset(*koffset);
                    if contiguous_x {
                        let row = std::slice::from_raw_parts(iptr, output_x);
                        writer.write_slice(row);
                    } else {
                        // Hoist multiplication out of inner loop.
                        let mut iptr_x = iptr;
                        for _ in 0..output_x {
                            writer.write(*iptr_x);
                            iptr_x = iptr_x.offset(x_stride);
                        }
                    }
                }
            }
            Ok(())
        }
    }

    #[inline(never)]
    fn padded_1d<T: Copy + Datum, W: PackingWriter<T>>(
        geometry: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        pad_value: &Tensor,
        writer: &mut W,
    ) -> TractResult<()> {
        unsafe {
            let pad_value = *pad_value.to_scalar_unchecked();
            let shape = &geometry.input_shape_with_n;
            let x_stride = geometry.pool.patch.spec.strides[0] as isize;
            let x_stride_ptr = x_stride * *shape.h_stride() as isize;
            let c_stride_ptr = *shape.c_stride() as isize;
            let input_width = shape.hw_dims()[0] as isize;
            let kernel_len = geometry.pool.patch.standard_layout_data_field.len();
            let iptr = input.as_ptr_unchecked::<T>();
            let iptr = iptr.add(g * geometry.ci_per_group * shape.c_stride());
            let output_width = *geometry.pool.patch.output_shape.get_unchecked(0);
            for ci in 0..geometry.ci_per_group {
                let iptr = iptr.offset(ci as isize * c_stride_ptr);
                for kitem in 0..kernel_len {
                    let dx = *geometry.pool.patch.data_field.as_ptr().add(kitem);
                    let valid_x_start =
                        Integer::div_ceil(&-dx, &x_stride).max(0).min(output_width as _);
                    let valid_x_end = Integer::div_ceil(&(input_width - dx), &x_stride)
                        .max(0)
                        .min(output_width as _);
                    let iptr = iptr.offset(
                        *geometry.pool.patch.standard_layout_data_field.get_unchecked(kitem),
                    );
                    Self::padded_invalid_x_loop(valid_x_start as usize, pad_value, &mut *writer);
                    Self::padded_valid_x_loop(
                        valid_x_start,
                        valid_x_end,
                        x_stride_ptr,
                        iptr,
                        &mut *writer,
                    );
                    Self::padded_invalid_x_loop(
                        output_width - valid_x_end as usize,
                        pad_value,
                        &mut *writer,
                    );
                }
            }
        }
        Ok(())
    }

    #[inline(never)]
    fn padded_2d<T: Copy + Datum, W: PackingWriter<T>>(
        geometry: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        pad_value: &Tensor,
        writer: &mut W,
    ) -> TractResult<()> {
        unsafe {
            let pad_value = *pad_value.to_scalar_unchecked();
            let y_stride = geometry.pool.patch.spec.strides[0] as isize;
            let x_stride = geometry.pool.patch.spec.strides[1] as isize;
            let shape = &geometry.input_shape_with_n;
            let y_stride_ptr = y_stride * *shape.h_stride() as isize;
            let x_stride_ptr = x_stride * *shape.w_stride() as isize;
            let c_stride_ptr = *shape.c_stride() as isize;
            let input_heigth = shape.hw_dims()[0] as isize;
            let input_width = shape.hw_dims()[1] as isize;
            let kernel_len = geometry.pool.patch.standard_layout_data_field.len();
            let iptr = input.as_ptr_unchecked::<T>();
            let iptr = iptr.add(g * geometry.ci_per_group * shape.c_stride());
            let output_width = *geometry.pool.patch.output_shape.get_unchecked(1);
            for ci in 0..geometry.ci_per_group {
                let iptr = iptr.offset(ci as isize * c_stride_ptr);
                for kitem in 0..kernel_len {
                    let dy = *geometry.pool.patch.data_field.as_ptr().offset(kitem as isize * 2);
                    let dx =
                        *geometry.pool.patch.data_field.as_ptr().offset(1 + kitem as isize * 2);
                    let valid_x_start =
                        Integer::div_ceil(&-dx, &x_stride).max(0).min(output_width as _);
                    let valid_x_end = Integer::div_ceil(&(input_width - dx), &x_stride)
                        .max(0)
                        .min(output_width as _);

                    let iptr = iptr.offset(
                        *geometry.pool.patch.standard_layout_data_field.get_unchecked(kitem),
                    );
                    for yo in 0..*geometry.pool.patch.output_shape.get_unchecked(0) {
                        let y = yo as isize * y_stride + dy;
                        let iptr = iptr.offset(yo as isize * y_stride_ptr);
                        if y >= 0 && y < input_heigth {
                            Self::padded_invalid_x_loop(
                                valid_x_start as usize,
                                pad_value,
                                &mut *writer,
                            );
                            Self::padded_valid_x_loop(
                                valid_x_start,
                                valid_x_end,
                                x_stride_ptr,
                                iptr,
                                &mut *writer,
                            );
                            Self::padded_invalid_x_loop(
                                output_width - valid_x_end as usize,
                                pad_value,
                                &mut *writer,
                            );
                        } else {
                            Self::padded_invalid_x_loop(output_width, pad_value, &mut *writer);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// edgeclip patch: the 2D patchers (`padded_2d`, `valid_2d`) for a `PackedFormat` or a
    /// `PackedI8K4` (see `RowsLayout`), the same values in the same places. Those push every
    /// value through a packing writer, which steps from panel to panel every `r` values and,
    /// for a stride above one, one value at a time. Here each k row (input channel, kernel tap) is first gathered into a plain row
    /// of the `n` output positions (a `memcpy` per output row at stride one, a strided copy
    /// otherwise, the padding filled), then copied into the panels `r` values at a time
    /// (`PackedFormat`), or held four rows at a time and interleaved (`PackedI8K4`), in the
    /// layout the writers make (`RowsLayout`).
    ///
    /// # Safety
    /// `packed` holds `n.divceil(r)` panels of `panel_len` values; `input` has the geometry's shape.
    #[inline(never)]
    unsafe fn rows_2d<T: Copy + Datum>(
        geometry: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        pad_value: T,
        packed: *mut T,
        layout: RowsLayout,
    ) {
        unsafe {
            let y_stride = geometry.pool.patch.spec.strides[0] as isize;
            let x_stride = geometry.pool.patch.spec.strides[1] as isize;
            let shape = &geometry.input_shape_with_n;
            let y_stride_ptr = y_stride * *shape.h_stride() as isize;
            let x_stride_ptr = x_stride * *shape.w_stride() as isize;
            let c_stride_ptr = *shape.c_stride() as isize;
            let input_height = shape.hw_dims()[0] as isize;
            let input_width = shape.hw_dims()[1] as isize;
            let kernel_len = geometry.pool.patch.standard_layout_data_field.len();
            let iptr = input.as_ptr_unchecked::<T>();
            // Where the input's storage ends: the vector gathers may read up to there.
            let input_end = (iptr as *const u8).add(input.valid_bytes()) as *const T;
            let iptr = iptr.add(g * geometry.ci_per_group * shape.c_stride());
            let output_height = geometry.pool.patch.output_shape[0];
            let output_width = geometry.pool.patch.output_shape[1];
            let n = geometry.n;
            debug_assert_eq!(n, output_height * output_width);
            // K=4-inner panels interleave four k rows: those are gathered before they are copied.
            let rows_held = if matches!(layout, RowsLayout::K4Inner { .. }) { 4 } else { 1 };
            let mut rows = vec![pad_value; n * rows_held];
            for ci in 0..geometry.ci_per_group {
                let iptr = iptr.offset(ci as isize * c_stride_ptr);
                for kitem in 0..kernel_len {
                    let dy = geometry.pool.patch.data_field[[kitem, 0]];
                    let dx = geometry.pool.patch.data_field[[kitem, 1]];
                    let valid_x_start =
                        Integer::div_ceil(&-dx, &x_stride).max(0).min(output_width as _) as usize;
                    let valid_x_end = (Integer::div_ceil(&(input_width - dx), &x_stride)
                        .max(0)
                        .min(output_width as _) as usize)
                        .max(valid_x_start);
                    let iptr = iptr.offset(geometry.pool.patch.standard_layout_data_field[kitem]);
                    let k = ci * kernel_len + kitem;
                    let held = k % rows_held;
                    let row = &mut rows[held * n..(held + 1) * n];
                    for yo in 0..output_height {
                        let dst = &mut row[yo * output_width..(yo + 1) * output_width];
                        let y = yo as isize * y_stride + dy;
                        if y < 0 || y >= input_height {
                            dst.fill(pad_value);
                            continue;
                        }
                        let src = iptr.offset(yo as isize * y_stride_ptr);
                        fill_short(&mut dst[..valid_x_start], pad_value);
                        let valid = &mut dst[valid_x_start..valid_x_end];
                        let src = src.offset(valid_x_start as isize * x_stride_ptr);
                        gather_row(src, valid, x_stride_ptr, input_end);
                        fill_short(&mut dst[valid_x_end..], pad_value);
                    }
                    match layout {
                        RowsLayout::KOuter { r, panel_len } => {
                            copy_row_k_outer(row.as_ptr(), packed.add(k * r), n, r, panel_len)
                        }
                        RowsLayout::K4Inner { r, panel_len } => {
                            if held == 3 || k + 1 == geometry.k {
                                let dst = packed.add((k / 4) * r * 4);
                                copy_rows_k4_inner(&rows, held + 1, dst, n, r, panel_len);
                            }
                        }
                    }
                }
            }
        }
    }

    #[inline(never)]
    unsafe fn padded_invalid_x_loop<T: Copy + Datum, W: PackingWriter<T>>(
        count: usize,
        pad_value: T,
        writer: &mut W,
    ) {
        for _ in 0..count {
            writer.write(pad_value);
        }
    }

    #[inline(never)]
    unsafe fn padded_valid_x_loop<T: Copy + Datum, W: PackingWriter<T>>(
        x_min: isize,
        x_max: isize,
        x_stride_ptr: isize,
        iptr: *const T,
        writer: &mut W,
    ) {
        // Fast path: x_stride_ptr == 1 means consecutive x values are at
        // consecutive memory addresses, so the inner loop is a contiguous
        // slice write — byte-identical to the per-element loop.
        if x_stride_ptr == 1 && x_max > x_min {
            unsafe {
                let row = std::slice::from_raw_parts(iptr.offset(x_min), (x_max - x_min) as usize);
                writer.write_slice(row);
            }
        } else {
            for x in x_min..x_max {
                writer.write(unsafe { *iptr.offset(x * x_stride_ptr) });
            }
        }
    }

    #[inline(never)]
    fn valid_2d<T: Copy + Datum, W: PackingWriter<T>>(
        geometry: &ConcreteGeometry,
        input: &TensorView,
        g: usize,
        writer: &mut W,
    ) -> TractResult<()> {
        unsafe {
            let shape = &geometry.input_shape_with_n;
            let y_stride = geometry.pool.patch.spec.strides[0] as isize;
            let x_stride = geometry.pool.patch.spec.strides[1] as isize;
            let y_stride_ptr = y_stride * *shape.h_stride() as isize;
            let x_stride_ptr = x_stride * *shape.w_stride() as isize;
            let c_stride_ptr = *shape.c_stride() as isize;
            let iptr = input.as_ptr_unchecked::<T>();
            let iptr = iptr.add(g * geometry.ci_per_group * shape.c_stride());
            let output_y = *geometry.pool.patch.output_shape.get_unchecked(0);
            let output_x = *geometry.pool.patch.output_shape.get_unchecked(1);
            // Fast path: stride-1 contiguous reads along x within each y-row.
            // Each y-row becomes a single write_slice (memcpy when the slice
            // fits in the current panel). Byte-identical to the slow path.
            let contiguous_x = x_stride_ptr == 1;
            for ci in 0..geometry.ci_per_group {
                let iptr = iptr.offset(ci as isize * c_stride_ptr);
                for koffset in &geometry.pool.patch.standard_layout_data_field {
                    let iptr = iptr.offset(*koffset);
                    let mut iptr_y = iptr;
                    for _ in 0..output_y {
                        if contiguous_x {
                            let row = std::slice::from_raw_parts(iptr_y, output_x);
                            writer.write_slice(row);
                        } else {
                            // Hoist x multiplication out of inner loop.
                            let mut iptr_x = iptr_y;
                            for _ in 0..output_x {
                                writer.write(*iptr_x);
                                iptr_x = iptr_x.offset(x_stride_ptr);
                            }
                        }
                        iptr_y = iptr_y.offset(y_stride_ptr);
                    }
                }
            }
            Ok(())
        }
    }
}

/// edgeclip patch: where `rows_2d` copies its rows.
#[derive(Clone, Copy, Debug)]
enum RowsLayout {
    /// `PackedFormat`: value `(k, n)` at `(n / r) * panel_len + k * r + n % r`.
    KOuter { r: usize, panel_len: usize },
    /// `PackedI8K4`: value `(k, n)` at `(n / r) * panel_len + (k / 4) * r * 4 + (n % r) * 4 + k % 4`
    /// (the buffer is zeroed, so lanes past the last k stay 0).
    K4Inner { r: usize, panel_len: usize },
}

/// edgeclip patch: one k row of `n` values into k-outer panels starting at `dst` (row k of
/// panel 0), `r` values per panel.
#[inline(always)]
unsafe fn copy_row_k_outer<T: Copy>(
    src: *const T,
    dst: *mut T,
    n: usize,
    r: usize,
    panel_len: usize,
) {
    let (full_panels, tail) = (n / r, n % r);
    unsafe {
        match r {
            4 => copy_panels::<T, 4>(src, dst, full_panels, panel_len),
            6 => copy_panels::<T, 6>(src, dst, full_panels, panel_len),
            8 => copy_panels::<T, 8>(src, dst, full_panels, panel_len),
            12 => copy_panels::<T, 12>(src, dst, full_panels, panel_len),
            16 => copy_panels::<T, 16>(src, dst, full_panels, panel_len),
            _ => {
                for p in 0..full_panels {
                    std::ptr::copy_nonoverlapping(src.add(p * r), dst.add(p * panel_len), r);
                }
            }
        }
        if tail > 0 {
            let p = full_panels;
            std::ptr::copy_nonoverlapping(src.add(p * r), dst.add(p * panel_len), tail);
        }
    }
}

/// edgeclip patch: `count` (1 to 4) k rows of `n` values, held one after the other in `rows`,
/// interleaved into K=4-inner panels starting at `dst` (their group of four k of panel 0).
#[inline(always)]
unsafe fn copy_rows_k4_inner<T: Copy>(
    rows: &[T],
    count: usize,
    dst: *mut T,
    n: usize,
    r: usize,
    panel_len: usize,
) {
    debug_assert!((1..=4).contains(&count) && rows.len() >= count * n);
    if count == 4 && std::mem::size_of::<T>() == 1 {
        // Bytes (the int8 kernels' panels), four rows: whole panels at once.
        let (rows, dst) = (rows.as_ptr() as *const u8, dst as *mut u8);
        unsafe {
            // 8: the panels of the x86 VNNI and Arm SDOT int8 kernels (8x8).
            if r == 8 {
                return interleave4_bytes_8(rows, dst, n, panel_len);
            }
        }
    }
    unsafe {
        let rows = rows.as_ptr();
        let srcs = [rows, rows.add(n), rows.add(2 * n), rows.add(3 * n)];
        let mut dst_panel = dst;
        let mut first = 0;
        while first < n {
            let width = r.min(n - first);
            let mut d = dst_panel;
            for s in first..first + width {
                for (kr, src) in srcs.iter().enumerate().take(count) {
                    *d.add(kr) = *src.add(s);
                }
                d = d.add(4);
            }
            first += width;
            dst_panel = dst_panel.add(panel_len);
        }
    }
}

/// edgeclip patch: [`copy_rows_k4_inner`] for four rows of `n` bytes (one after the other at
/// `rows`) and panels 8 wide: each whole panel with [`interleave4x8`], then the last, partial
/// panel byte by byte.
#[inline(always)]
unsafe fn interleave4_bytes_8(rows: *const u8, dst: *mut u8, n: usize, panel_len: usize) {
    unsafe {
        let srcs = [rows, rows.add(n), rows.add(2 * n), rows.add(3 * n)];
        let full = n / 8;
        for p in 0..full {
            interleave4x8(srcs.map(|src| src.add(p * 8)), dst.add(p * panel_len));
        }
        let out = dst.add(full * panel_len);
        for s in full * 8..n {
            for (kr, src) in srcs.iter().enumerate() {
                *out.add(4 * (s - full * 8) + kr) = *src.add(s);
            }
        }
    }
}

/// edgeclip patch: 8 bytes from each of four rows into one 32-byte panel, column by column
/// (`out[4 j + r] = rows[r][j]`). Arm: `ST4`, the interleaving store, does it in one instruction
/// (the compiler's own vectorisation of the portable version below took 65 instructions a panel
/// on the Cortex-A76).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn interleave4x8(rows: [*const u8; 4], out: *mut u8) {
    use std::arch::aarch64::{uint8x8x4_t, vld1_u8, vst4_u8};
    unsafe {
        let [a, b, c, d] = rows.map(|row| vld1_u8(row));
        vst4_u8(out, uint8x8x4_t(a, b, c, d));
    }
}

/// x86-64: SSE2 unpacks, bytes of rows 0 and 1 (and 2 and 3) in pairs, then the pairs in words.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn interleave4x8(rows: [*const u8; 4], out: *mut u8) {
    use std::arch::x86_64::*;
    unsafe {
        let [a, b, c, d] = rows.map(|row| _mm_loadl_epi64(row as *const __m128i));
        let (ab, cd) = (_mm_unpacklo_epi8(a, b), _mm_unpacklo_epi8(c, d));
        _mm_storeu_si128(out as *mut __m128i, _mm_unpacklo_epi16(ab, cd));
        _mm_storeu_si128(out.add(16) as *mut __m128i, _mm_unpackhi_epi16(ab, cd));
    }
}

/// Elsewhere: each column's four bytes as one little-endian word.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
#[inline(always)]
unsafe fn interleave4x8(rows: [*const u8; 4], out: *mut u8) {
    unsafe {
        let [a, b, c, d] = rows.map(|row| std::ptr::read_unaligned(row as *const [u8; 8]));
        for j in 0..8 {
            let word = u32::from_le_bytes([a[j], b[j], c[j], d[j]]);
            std::ptr::write_unaligned(out.add(4 * j) as *mut [u8; 4], word.to_le_bytes());
        }
    }
}

/// edgeclip patch: copies `panels` runs of `R` values from a plain row into consecutive panels
/// (`panel_len` apart), with the run length known to the compiler.
#[inline(always)]
unsafe fn copy_panels<T: Copy, const R: usize>(
    src: *const T,
    dst: *mut T,
    panels: usize,
    panel_len: usize,
) {
    for p in 0..panels {
        unsafe { std::ptr::copy_nonoverlapping(src.add(p * R), dst.add(p * panel_len), R) };
    }
}

/// edgeclip patch: one output row of a k row, `dst.len()` values `stride` apart from `src`.
/// Bytes (the int8 convolutions) at stride 1 or 2 take the short copies and vector gathers
/// below; the rest is a `memcpy` (stride 1) or a loop.
///
/// # Safety
/// `src` reads `dst.len()` values `stride` apart; `input_end` is where the input's storage ends.
#[inline(always)]
unsafe fn gather_row<T: Copy>(src: *const T, dst: &mut [T], stride: isize, input_end: *const T) {
    let len = dst.len();
    unsafe {
        let mut done = 0;
        if std::mem::size_of::<T>() == 1 {
            let (src, out) = (src as *const u8, dst.as_mut_ptr() as *mut u8);
            if stride == 1 {
                return copy_bytes(src, out, len);
            }
            if stride == 2 {
                done = gather_stride2_bytes(src, out, len, input_end as *const u8);
            }
        } else if stride == 1 {
            return std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), len);
        }
        let mut src = src.offset(done as isize * stride);
        for v in &mut dst[done..] {
            *v = *src;
            src = src.offset(stride);
        }
    }
}

/// edgeclip patch: copies `len` bytes. The rows of a convolution's later layers are short (8 to
/// 32 bytes in the demo tower), and a call to `memcpy` for each cost more than the copy: up to 64
/// bytes are copied here with two or four overlapping loads and stores.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    #[inline(always)]
    unsafe fn chunk<const N: usize>(src: *const u8, dst: *mut u8, at: usize) {
        unsafe {
            let v = std::ptr::read_unaligned(src.add(at) as *const [u8; N]);
            std::ptr::write_unaligned(dst.add(at) as *mut [u8; N], v);
        }
    }
    unsafe {
        match len {
            0..=7 => {
                for i in 0..len {
                    *dst.add(i) = *src.add(i);
                }
            }
            8..=16 => {
                chunk::<8>(src, dst, 0);
                chunk::<8>(src, dst, len - 8);
            }
            17..=32 => {
                chunk::<16>(src, dst, 0);
                chunk::<16>(src, dst, len - 16);
            }
            33..=64 => {
                chunk::<16>(src, dst, 0);
                chunk::<16>(src, dst, 16);
                chunk::<16>(src, dst, len - 32);
                chunk::<16>(src, dst, len - 16);
            }
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

/// edgeclip patch: the first values of a stride-2 byte gather (`dst[i] = src[2 i]`), 16 (or 8)
/// at a time, and how many it did; the caller does the rest one by one. A vector load of 2 m
/// bytes reads one byte past the last value it keeps, so the loads stop where that byte would be
/// past `input_end`. A row longer than a vector ends with one more vector, overlapping the one
/// before (the same values written twice), so only the input's last row takes the loop.
/// Arm: `LD2` splits even and odd bytes. x86-64: SSE2 (the baseline) masks each 16-bit lane
/// to its low byte and packs two registers into one.
#[cfg(any(target_arch = "aarch64", target_arch = "x86_64"))]
#[inline(always)]
unsafe fn gather_stride2_bytes(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    input_end: *const u8,
) -> usize {
    // Values `i` whose pair of bytes `src[2 i]`, `src[2 i + 1]` lies inside the input.
    let readable = (input_end as usize).saturating_sub(src as usize) / 2;
    let len = len.min(readable);
    unsafe {
        if len >= 16 {
            let mut i = 0;
            while i + 16 <= len {
                gather16_stride2(src.add(2 * i), dst.add(i));
                i += 16;
            }
            if i < len {
                gather16_stride2(src.add(2 * (len - 16)), dst.add(len - 16));
            }
            len
        } else if len >= 8 {
            gather8_stride2(src, dst);
            gather8_stride2(src.add(2 * (len - 8)), dst.add(len - 8));
            len
        } else {
            0
        }
    }
}

/// Elsewhere (32-bit Arm, ...): none; the caller's loop does them all.
#[cfg(not(any(target_arch = "aarch64", target_arch = "x86_64")))]
#[inline(always)]
unsafe fn gather_stride2_bytes(_: *const u8, _: *mut u8, _: usize, _: *const u8) -> usize {
    0
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn gather16_stride2(src: *const u8, dst: *mut u8) {
    use std::arch::aarch64::{vld2q_u8, vst1q_u8};
    unsafe { vst1q_u8(dst, vld2q_u8(src).0) }
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn gather8_stride2(src: *const u8, dst: *mut u8) {
    use std::arch::aarch64::{vld2_u8, vst1_u8};
    unsafe { vst1_u8(dst, vld2_u8(src).0) }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gather16_stride2(src: *const u8, dst: *mut u8) {
    use std::arch::x86_64::*;
    unsafe {
        let low_bytes = _mm_set1_epi16(0x00ff);
        let a = _mm_and_si128(_mm_loadu_si128(src as *const __m128i), low_bytes);
        let b = _mm_and_si128(_mm_loadu_si128(src.add(16) as *const __m128i), low_bytes);
        _mm_storeu_si128(dst as *mut __m128i, _mm_packus_epi16(a, b));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gather8_stride2(src: *const u8, dst: *mut u8) {
    use std::arch::x86_64::*;
    unsafe {
        let a = _mm_and_si128(_mm_loadu_si128(src as *const __m128i), _mm_set1_epi16(0x00ff));
        _mm_storel_epi64(dst as *mut __m128i, _mm_packus_epi16(a, a));
    }
}

/// Fills the padding at one end of a gathered row: with a convolution's usual padding that is
/// none or one element, for which a call to `memset` (what `fill` becomes) costs more than the
/// store; it was 7% of the demo tower's time on x86, once per row per kernel item.
#[inline(always)]
fn fill_short<T: Copy>(dst: &mut [T], value: T) {
    match dst {
        [] => {}
        [one] => *one = value,
        _ => dst.fill(value),
    }
}
