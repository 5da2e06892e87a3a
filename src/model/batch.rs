//! Batches through the image tower: the images of a round (every zone of every camera's frame)
//! split over inference workers, each running its share image by image (or, when asked, in one
//! call of a plan with the graph's symbolic batch axis: slower on the CPU, measured, so off).
//!
//! A worker is a thread with its own tract run state over the encoder's one plan (one copy of
//! the weights). Worker 0 is the calling thread; the others are scoped threads started for each
//! batch (starting a thread costs tens of microseconds, a tower run milliseconds). How many
//! workers and how many intra-op threads to use is [`super::parallelism`]'s question.

use super::ModelError;
use super::device::Device;
use super::encoder::{ImageEncoder, ONE_CALL_OFF, run_err, run_plan_into};
use super::plan::StateSlot;

impl ImageEncoder {
    /// Splits each batch over `n` inference workers (threads each with their own tract state
    /// over the one shared plan: one copy of the weights). 1 (and 0) = one worker, the calling
    /// thread. Workers run only on the CPU: on a GPU the batch runs on the calling thread.
    pub fn set_workers(&mut self, n: usize) {
        self.worker_states
            .resize_with(n.max(1) - 1, Default::default);
    }

    /// How many inference workers a batch is split over ([`ImageEncoder::set_workers`]).
    pub fn workers(&self) -> usize {
        if self.device() == Device::Cpu {
            self.worker_states.len() + 1
        } else {
            1
        }
    }

    /// Turns one-call batches on or off: with them on, each worker runs its share of a batch
    /// in one call of a plan for any batch size (built now, a second optimized copy of the
    /// weights), when the graph can take it ([`super::plan::build_batched`]: a symbolic batch
    /// axis and no activation scale taken from the whole batch); else image by image through
    /// the batch-1 plan. Off at load, because on the CPU tract runs a batch slower per image
    /// than single images (issue 27's measurements in `benches/README.md`: the demo's int8
    /// tower 10.5 ms an image alone, 16 to 18 ms an image in batches of 2 to 8).
    /// On a GPU the batch stays image by image: tract-cuda's batches are not measured yet.
    ///
    /// A graph that cannot be batched is not an error: [`ImageEncoder::one_call_batches`] says
    /// why, and batches run image by image. An error comes only from a graph that fails to load.
    pub fn set_one_call_batches(&mut self, on: bool) -> Result<(), ModelError> {
        self.batched = if !on {
            Err(ONE_CALL_OFF.into())
        } else if self.device() != Device::Cpu {
            Err(format!(
                "batches on the {} run image by image",
                self.device()
            ))
        } else {
            let [_, c, h, w] = self.shape;
            let (input, output) = &self.io;
            super::plan::build_batched(self.path(), input, [c, h, w], output, self.dim())?
        };
        if let Err(why) = &self.batched
            && on
        {
            log::info!(
                "{}: batches run image by image: {why}",
                self.path().display()
            );
        }
        Ok(())
    }

    /// Whether a worker's share of a batch runs in one call
    /// ([`ImageEncoder::set_one_call_batches`]); `Err` says why it runs image by image.
    pub fn one_call_batches(&self) -> Result<(), &str> {
        self.batched.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// One image's time through the tower in milliseconds, at the current intra-op threads:
    /// a blank image run twice, the second run timed (the first builds the run state). What
    /// [`super::TowerCost::image_ms`] wants, with [`super::set_threads`]`(1)` first.
    pub fn time_one_image(&self) -> Result<f64, ModelError> {
        let pixels = vec![0f32; self.input_len()];
        let mut out = vec![0f32; self.dim()];
        self.encode_into(&pixels, &mut out)?;
        let started = std::time::Instant::now();
        self.encode_into(&pixels, &mut out)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    /// Encodes `n = pixels.len() / self.input_len()` images laid out one after another (NCHW
    /// each) into `out` (n * dim), one embedding per image, in order.
    ///
    /// The images are split as evenly as can be over the workers; each worker runs its share
    /// image by image, or in one call with [`ImageEncoder::set_one_call_batches`]. Image by
    /// image, each embedding is the one [`ImageEncoder::encode_into`] gives it, to the bit (the
    /// same plan). In one call it is too for the demo's towers and int8 (QDQ) ViTs, and within
    /// a few ulps for fp32 ViTs (the tiny CLIP fixture: 1.5 ulps of the largest component, where
    /// tract's batched plan sums some products in another order); a tower whose int8 scales
    /// depend on the whole batch is not run in one call ([`super::plan::build_batched`]).
    /// `tests` check all of these.
    /// An empty batch does nothing.
    pub fn encode_batch_into(&self, pixels: &[f32], out: &mut [f32]) -> Result<(), ModelError> {
        let (len, dim) = (self.input_len(), self.dim());
        let n = pixels.len() / len;
        if !pixels.len().is_multiple_of(len) || out.len() != n * self.dim() {
            return Err(ModelError::Shape {
                path: self.path().to_path_buf(),
                message: format!(
                    "encode_batch called with {} input values and room for {} outputs: the input \
                     must be a whole number of images of {len} values, the output {dim} values \
                     per image",
                    pixels.len(),
                    out.len(),
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let shares = shares(n, self.workers());
        if shares.len() == 1 {
            return self.encode_share(None, pixels, out);
        }
        let (mut pixels, mut out) = (pixels, out);
        let mut parts = Vec::with_capacity(shares.len());
        for &k in &shares {
            let (p, rest) = pixels.split_at(k * len);
            let (o, rest_out) = std::mem::take(&mut out).split_at_mut(k * dim);
            parts.push((p, o));
            (pixels, out) = (rest, rest_out);
        }
        std::thread::scope(|scope| {
            let mut parts = parts.into_iter();
            let (first_pixels, first_out) = parts.next().expect("two shares or more");
            let handles: Vec<_> = parts
                .zip(&self.worker_states)
                .map(|((p, o), states)| scope.spawn(move || self.encode_share(Some(states), p, o)))
                .collect();
            let mut result = self.encode_share(None, first_pixels, first_out);
            for handle in handles {
                let joined = handle.join().unwrap_or_else(|_| {
                    Err(run_err(self.path())(anyhow::anyhow!(
                        "an inference worker panicked"
                    )))
                });
                result = result.and(joined);
            }
            result
        })
    }

    /// Runs one worker's share of a batch, in `states` (a worker's own run states; `None`: the
    /// plans' own).
    fn encode_share(
        &self,
        states: Option<&[StateSlot; 2]>,
        pixels: &[f32],
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        let (len, dim) = (self.input_len(), self.dim());
        let n = pixels.len() / len;
        match &self.batched {
            Ok(plan) if n > 1 => {
                let [_, c, h, w] = self.shape;
                let slot = states.map(|s| &s[1]);
                run_plan_into(plan, slot, self.path(), &[n, c, h, w], pixels, out)
            }
            _ => {
                let slot = states.map(|s| &s[0]);
                for (p, o) in pixels.chunks_exact(len).zip(out.chunks_exact_mut(dim)) {
                    run_plan_into(&self.tower.plan, slot, self.path(), &self.shape, p, o)?;
                }
                Ok(())
            }
        }
    }
}

/// How `n` images are split over `workers` workers: as evenly as can be, the larger shares
/// first, no empty share (fewer shares than workers when there are fewer images).
fn shares(n: usize, workers: usize) -> Vec<usize> {
    let w = workers.clamp(1, n.max(1));
    (0..w).map(|i| n / w + usize::from(i < n % w)).collect()
}

#[cfg(test)]
mod tests;
