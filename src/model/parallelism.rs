//! How to spend a machine's cores on the image tower: intra-op threads (tract's multithreaded
//! matrix products, [`super::set_threads`]) or inference workers (a round's images split over
//! threads, each running whole images, [`super::ImageEncoder::set_workers`]), and whether a
//! worker's share runs in one call ([`super::ImageEncoder::set_one_call_batches`]).
//!
//! Pure: the inputs are numbers, nothing here reads the machine or a clock. What it rests on
//! (issue 27 in `benches/README.md`, and issue 4's thread figures there):
//!
//! - **Workers scale with the images, threads do not.** The images of a round are independent;
//!   a worker runs whole images with no synchronisation inside one. tract's threads split each
//!   matrix product and leave the other operators on one thread: the demo tower ran slower on 2
//!   threads than on 1 (fp32 89 -> 81 images/s at batches of 1 to 8, int8 61 -> 59, loaded; the
//!   plain student 0.70 -> 1.01 ms, idle), and so did ViT-B/32's int8 graph (70.7 -> 90.0 ms),
//!   while ViT-B/32 in fp32, whose time is 89% matrix products, gained 1.44x from a second
//!   thread (100.4 -> 69.7 ms). 2 workers on the 2 cores gave the demo's fp32 tower 119 to 126
//!   images/s against 88 for one (batches of 2 to 8, loaded).
//! - **One call per batch does not pay on the CPU.** tract ran every tower slower per image in
//!   one call than image by image (the demo's int8 tower 1.4 to 1.7x slower at batches of 2 to
//!   8, fp32 1.4 to 1.6x, the tiny CLIP fixture's ViT 1.1 to 1.4x), so it stays off there. On a
//!   GPU it is not measured yet: off too, until it is.
//!
//! So: one worker per image of the round, up to one per core; a core left over goes to intra-op
//! threads only for a float tower slow enough for its matrix products to be worth splitting
//! ([`THREADS_PAY_FROM_MS`]).

use super::device::Device;
use super::options::Precision;

/// One image's time on one thread from which a float tower's matrix products are worth
/// splitting over spare cores: ViT-B/32 fp32 (100 ms) gained 1.44x from a second thread, the
/// demo student (1 to 10 ms) lost. The boundary between them is not measured more finely.
pub const THREADS_PAY_FROM_MS: f64 = 20.0;

/// What the choice needs to know about the image tower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TowerCost {
    /// Where it runs.
    pub device: Device,
    /// Its file's precision.
    pub precision: Precision,
    /// One image's time on one thread, in milliseconds
    /// ([`super::ImageEncoder::time_one_image`]).
    pub image_ms: f64,
}

/// How the image tower uses the machine: what [`choose_parallelism`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    /// tract's intra-op threads ([`super::set_threads`]), shared by the workers.
    pub threads: usize,
    /// Inference workers ([`super::ImageEncoder::set_workers`]).
    pub workers: usize,
    /// Whether a worker's share of a batch runs in one call
    /// ([`super::ImageEncoder::set_one_call_batches`]).
    pub one_call_batches: bool,
}

/// What the daemon should use on this machine for this tower: intra-op threads and workers,
/// given the `cores` available and how many images a round usually holds (`images_per_round`:
/// cameras x zones). `workers` is `model.workers` when the config sets it: it is kept, and the
/// threads are chosen around it. See the module's comment for the measurements behind it.
pub fn choose_parallelism(
    cores: usize,
    images_per_round: usize,
    tower: &TowerCost,
    workers: Option<usize>,
) -> Parallelism {
    let cores = cores.max(1);
    if tower.device != Device::Cpu {
        // The GPU runs the tower; its CPU side is small and workers do not run there.
        return Parallelism {
            threads: 1,
            workers: 1,
            one_call_batches: false,
        };
    }
    let workers = workers
        .unwrap_or_else(|| images_per_round.clamp(1, cores))
        .max(1);
    let spare = cores / workers;
    let float = matches!(tower.precision, Precision::Fp32 | Precision::Fp16);
    let threads = if spare > 1 && float && tower.image_ms >= THREADS_PAY_FROM_MS {
        spare
    } else {
        1
    };
    Parallelism {
        threads,
        workers,
        one_call_batches: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(precision: Precision, image_ms: f64) -> TowerCost {
        TowerCost {
            device: Device::Cpu,
            precision,
            image_ms,
        }
    }

    fn pick(cores: usize, images: usize, tower: TowerCost) -> (usize, usize) {
        let p = choose_parallelism(cores, images, &tower, None);
        assert!(!p.one_call_batches, "one call is slower on the CPU");
        (p.threads, p.workers)
    }

    /// One worker per image, up to one per core: this machine's 2 cores with the demo's 4 cameras
    /// x 2 zones, a Pi 5's 4 cores with 1, 2, 3 and 8 images.
    #[test]
    fn workers_follow_the_images_up_to_the_cores() {
        let demo = cpu(Precision::Int8Static, 10.0);
        assert_eq!(pick(2, 8, demo), (1, 2));
        assert_eq!(pick(4, 8, demo), (1, 4));
        assert_eq!(pick(4, 3, demo), (1, 3));
        assert_eq!(pick(4, 2, demo), (1, 2));
        assert_eq!(pick(4, 1, demo), (1, 1));
        assert_eq!(pick(1, 8, demo), (1, 1));
    }

    /// Spare cores go to intra-op threads only for a slow float tower: ViT-B/32 fp32 on a Pi 5
    /// with one camera gets 4 threads, with two images 2 x 2; its int8 graph and the demo
    /// student (fast) never do.
    #[test]
    fn spare_cores_become_threads_only_for_slow_float_towers() {
        let vit_fp32 = cpu(Precision::Fp32, 100.0);
        assert_eq!(pick(4, 1, vit_fp32), (4, 1));
        assert_eq!(pick(4, 2, vit_fp32), (2, 2));
        assert_eq!(pick(4, 3, vit_fp32), (1, 3));
        assert_eq!(pick(4, 8, vit_fp32), (1, 4));
        assert_eq!(pick(4, 1, cpu(Precision::Int8Dynamic, 70.0)), (1, 1));
        assert_eq!(pick(4, 1, cpu(Precision::Fp32, 1.0)), (1, 1));
        assert_eq!(
            pick(4, 1, cpu(Precision::Fp32, THREADS_PAY_FROM_MS)),
            (4, 1)
        );
    }

    /// `model.workers` is kept, threads chosen around it; nonsense (0 cores, 0 images, 0
    /// workers) still gives one of each.
    #[test]
    fn an_override_is_kept_and_zeros_give_one() {
        let vit_fp32 = cpu(Precision::Fp32, 100.0);
        let p = choose_parallelism(4, 8, &vit_fp32, Some(1));
        assert_eq!((p.threads, p.workers), (4, 1));
        let p = choose_parallelism(2, 1, &vit_fp32, Some(3));
        assert_eq!((p.threads, p.workers), (1, 3));
        let p = choose_parallelism(0, 0, &vit_fp32, Some(0));
        assert_eq!((p.threads, p.workers), (1, 1));
        assert_eq!(pick(0, 0, vit_fp32), (1, 1));
    }

    /// On a GPU: one worker, one thread, whatever the cores and images.
    #[test]
    fn a_gpu_gets_one_worker() {
        let gpu = TowerCost {
            device: Device::Cuda,
            precision: Precision::Fp16,
            image_ms: 3.0,
        };
        let p = choose_parallelism(12, 8, &gpu, None);
        assert_eq!(
            p,
            Parallelism {
                threads: 1,
                workers: 1,
                one_call_batches: false
            }
        );
    }
}
