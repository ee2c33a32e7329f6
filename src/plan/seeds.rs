//! Every seed of a run, derived from `experiment.seed` with a named salt each, so that a stage's
//! randomness is independent of every other's and the same on every resume.

/// The seeds of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    /// `experiment.seed`.
    pub base: u64,
}

const TEACHER_INIT: u64 = 0x7EAC;
const STUDENT_INIT: u64 = 0x5E7A;
const SUPERNET_INIT: u64 = 0xB10C;
const DISTILL_ORDER: u64 = 0xD15;
const CALIBRATION: u64 = 0xCA1;
const CONTROLS: u64 = 0x5EED;
const STUDY: u64 = 0x57D1;

impl Seeds {
    /// Initial weights of a trained teacher.
    pub fn teacher_init(&self) -> u64 {
        self.base ^ TEACHER_INIT
    }

    /// Initial weights of a retrained student, by its name in the run.
    pub fn student_init(&self, name: &str) -> u64 {
        self.base
            ^ STUDENT_INIT
            ^ name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
    }

    /// Initial weights of block `i`'s supernet.
    pub fn supernet_init(&self, i: usize) -> u64 {
        self.base ^ SUPERNET_INIT ^ ((i as u64) << 16)
    }

    /// The order of the search subset in a distillation epoch.
    pub fn distill_order(&self, epoch: usize) -> u64 {
        self.base ^ DISTILL_ORDER ^ ((epoch as u64) << 8)
    }

    /// Augmentation of a distillation epoch resumed after `skip` steps.
    pub fn distill_augment(&self, epoch: usize, skip: usize) -> u64 {
        self.base
            .wrapping_add(epoch as u64 * 1_000_003 + skip as u64)
    }

    /// The paths block `i` samples at a step.
    pub fn distill_paths(&self, i: usize, epoch: usize, step: usize) -> u64 {
        self.base ^ ((i as u64) << 40) ^ ((epoch as u64) << 20) ^ step as u64
    }

    /// The calibration batches of rating.
    pub fn calibration(&self) -> u64 {
        self.base ^ CALIBRATION
    }

    /// The random control architectures.
    pub fn controls(&self) -> u64 {
        self.base ^ CONTROLS
    }

    /// The architectures a study samples (and its bootstrap).
    pub fn study(&self) -> u64 {
        self.base ^ STUDY
    }

    /// The seeds of a study's `k`-th retraining of every net (order, augmentation, weights).
    pub fn study_retrain(&self, k: usize) -> u64 {
        self.base ^ STUDY.wrapping_mul(k as u64 + 1) << 20
    }

    /// The order of the training set in an epoch of a from-scratch training.
    pub fn train_order(&self, epoch: usize) -> u64 {
        self.base ^ ((epoch as u64 + 1) * 7919)
    }

    /// Augmentation of an epoch of a from-scratch training.
    pub fn train_augment(&self, epoch: usize) -> u64 {
        self.base
            .wrapping_mul(31)
            .wrapping_add(epoch as u64 * 100_003)
    }

    /// The per-class sampling of the subsets.
    pub fn subsets(&self) -> u64 {
        self.base
    }
}
