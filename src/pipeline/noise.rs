//! Every random draw of a generation: the starting noise (seeded, or pooled from a larger canvas
//! for drafts), and grounded inpainting's VAE sample and re-noising draws (seeded, or recorded from
//! a reference run).

use super::{Context, PipelineError};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::Distribution;

/// A seeded stream of standard-normal f32 draws. Drawn on the CPU, so that a seed gives the same
/// picture on every device.
pub struct NormalStream(rand::rngs::StdRng);

impl NormalStream {
    pub fn seeded(seed: u64) -> Self {
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// The next `shape.elem_count()` draws, in row-major order.
    pub fn tensor<S: Into<candle_core::Shape>>(
        &mut self,
        shape: S,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let shape = shape.into();
        let data: Vec<f32> = (0..shape.elem_count())
            .map(|_| rand_distr::StandardNormal.sample(&mut self.0))
            .collect();
        Tensor::from_vec(data, shape, device)
    }
}

/// Standard-normal noise from a seeded generator on the CPU, so a seed gives the same picture on
/// every device.
pub fn seeded_noise(
    seed: u64,
    shape: (usize, usize, usize, usize),
    device: &Device,
) -> candle_core::Result<Tensor> {
    NormalStream::seeded(seed).tensor(shape, device)
}

/// The seeded noise of a latent grid `k` times larger in each direction, averaged over `k × k`
/// cells and multiplied by `k`: still standard normal per element, and its coarse structure (what
/// decides the composition) is the large grid's. `None` when `full` is not `k` times `shape`'s grid.
pub fn pooled_noise(
    seed: u64,
    shape: (usize, usize, usize, usize),
    full: (usize, usize),
    device: &Device,
) -> candle_core::Result<Option<Tensor>> {
    let (b, c, h, w) = shape;
    let (fh, fw) = full;
    if h == 0 || w == 0 || fh <= h || fh % h != 0 || fw % w != 0 || fh / h != fw / w {
        return Ok(None);
    }
    let k = fh / h;
    let big = seeded_noise(seed, (b, c, fh, fw), &Device::Cpu)?;
    let pooled = (big.avg_pool2d(k)? * k as f64)?;
    Ok(Some(pooled.to_device(device)?))
}

/// Recorded standard-normal draws for grounded inpainting, so that a run can reproduce diffusers',
/// which takes them from torch's global generator.
#[derive(Debug, Clone)]
pub struct RecordedNoise {
    /// `[1, 4, h, w]`: the VAE posterior sample's draw (latent = mean + std · vae_noise).
    pub vae_noise: Tensor,
    /// `[K, 1, 4, h, w]`: the draws that re-noise the kept region, used as
    /// `add_noise(z0, step_noise[i], t_i)`: one per UNet evaluation for diffusers models (K = N + 1
    /// for PNDM), one per sampling step for original checkpoints (K = the steps the PLMS sampler
    /// runs).
    pub step_noise: Tensor,
}

/// Largest latents or noise file read (`--init-latents`, `--noise`): a thousand steps of recorded
/// noise for a 2048² canvas is about 1 GiB.
pub const MAX_LATENTS_FILE_BYTES: u64 = 4 << 30;

/// The tensors of a latents or noise safetensors file, read whole but bounded: a device, FIFO or
/// oversized file is refused before anything is allocated for it.
pub fn read_latents_file(
    path: &std::path::Path,
) -> Result<std::collections::HashMap<String, Tensor>, PipelineError> {
    let bytes = crate::fsio::read_limited(path, MAX_LATENTS_FILE_BYTES)
        .map_err(|e| PipelineError::Invalid(e.to_string()))?;
    latents_from_bytes(&bytes, path)
}

/// The tensors of a latents or noise safetensors file already in memory; `origin` names it in
/// errors.
pub fn latents_from_bytes(
    bytes: &[u8],
    origin: &std::path::Path,
) -> Result<std::collections::HashMap<String, Tensor>, PipelineError> {
    candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        PipelineError::Invalid(format!(
            "{}: not a readable safetensors file: {e}",
            origin.display()
        ))
    })
}

/// One named tensor of a latents or noise file, which must hold only finite numbers.
pub fn read_latents_tensor(path: &std::path::Path, name: &str) -> Result<Tensor, PipelineError> {
    finite_tensor(&read_latents_file(path)?, path, name)
}

/// `name` out of the tensors of the file at `path` (see [`read_latents_tensor`]).
fn finite_tensor(
    tensors: &std::collections::HashMap<String, Tensor>,
    path: &std::path::Path,
    name: &str,
) -> Result<Tensor, PipelineError> {
    let t = tensors.get(name).cloned().ok_or_else(|| {
        let mut found: Vec<_> = tensors.keys().cloned().collect();
        found.sort();
        PipelineError::Invalid(format!(
            "{}: no tensor named `{name}` (found: {found:?})",
            path.display()
        ))
    })?;
    ensure_finite(&t, &format!("{}: tensor `{name}`", path.display()))?;
    Ok(t)
}

/// Refuses a tensor holding NaN or infinity, naming `what` and how many values are bad.
pub fn ensure_finite(t: &Tensor, what: &str) -> Result<(), PipelineError> {
    let values = t
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .ctx(what)?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(PipelineError::NonFinite(format!(
            "{what} hold {bad} NaN or infinite values out of {}",
            values.len()
        )));
    }
    Ok(())
}

impl RecordedNoise {
    /// Reads tensors `vae_noise` and `step_noise` from a safetensors file.
    pub fn load(path: &std::path::Path) -> Result<Self, PipelineError> {
        let tensors = read_latents_file(path)?;
        Ok(Self {
            vae_noise: finite_tensor(&tensors, path, "vae_noise")?,
            step_noise: finite_tensor(&tensors, path, "step_noise")?,
        })
    }
}

/// Which re-noising draw an evaluation takes: the recorded draws are indexed by UNet evaluation for
/// diffusers models and by sampling step for original checkpoints (see
/// [`super::ModelOrigin::renoises_every_evaluation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenoiseDraw {
    Evaluation(usize),
    Step(usize),
}

impl RenoiseDraw {
    fn index(self) -> usize {
        match self {
            RenoiseDraw::Evaluation(i) | RenoiseDraw::Step(i) => i,
        }
    }
}

impl std::fmt::Display for RenoiseDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenoiseDraw::Evaluation(i) => write!(f, "evaluation {i}"),
            RenoiseDraw::Step(s) => write!(f, "step {s}"),
        }
    }
}

/// Where one generation's draws come from. Each use has its own seed (`seed`, `seed + 1`,
/// `seed + 2`), so that turning inpainting on or off does not change the starting noise.
pub struct NoiseSource<'a> {
    seed: u64,
    recorded: Option<&'a RecordedNoise>,
    /// Re-noising draws are taken one after another from one stream.
    renoise: NormalStream,
}

impl<'a> NoiseSource<'a> {
    pub fn new(seed: u64, recorded: Option<&'a RecordedNoise>) -> Self {
        Self {
            seed,
            recorded,
            renoise: NormalStream::seeded(seed.wrapping_add(2)),
        }
    }

    /// The starting latents' noise: the seed's own, or, given the latent grid of a larger canvas
    /// (a draft's full render), that canvas's noise pooled down when the sizes allow it.
    pub fn initial(
        &self,
        shape: (usize, usize, usize, usize),
        full_grid: Option<(usize, usize)>,
        device: &Device,
    ) -> Result<Tensor, PipelineError> {
        let pooled = match full_grid {
            Some(full) => pooled_noise(self.seed, shape, full, device).ctx("initial noise")?,
            None => None,
        };
        match pooled {
            Some(t) => Ok(t),
            None => seeded_noise(self.seed, shape, device).ctx("initial noise"),
        }
    }

    /// The draw of the VAE posterior sample (`shape` is the posterior's).
    pub fn vae(&self, shape: &[usize], device: &Device) -> Result<Tensor, PipelineError> {
        match self.recorded {
            Some(n) => {
                if n.vae_noise.dims() != shape {
                    return Err(PipelineError::Invalid(format!(
                        "recorded vae_noise has shape {:?}, the posterior is {:?}",
                        n.vae_noise.dims(),
                        shape
                    )));
                }
                n.vae_noise.to_device(device).ctx("vae noise")
            }
            None => {
                let shape = candle_core::Shape::from(shape).dims4().ctx("VAE encode")?;
                seeded_noise(self.seed.wrapping_add(1), shape, device).ctx("vae noise")
            }
        }
    }

    /// The draw that re-noises the kept region, shaped like `like`: the recording's `draw`, or
    /// the stream's next.
    pub fn renoise(
        &mut self,
        draw: RenoiseDraw,
        like: &Tensor,
        device: &Device,
    ) -> Result<Tensor, PipelineError> {
        match self.recorded {
            Some(n) => {
                let k = n.step_noise.dim(0).ctx("step noise")?;
                if draw.index() >= k {
                    return Err(PipelineError::Invalid(format!(
                        "recorded step_noise has {k} draws; {draw} needs one more"
                    )));
                }
                n.step_noise
                    .get(draw.index())
                    .ctx("step noise")?
                    .to_device(device)
                    .ctx("step noise")
            }
            None => self.renoise.tensor(like.shape(), device).ctx("step noise"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_noise_is_the_large_grids_noise_averaged_and_rescaled() {
        let dev = Device::Cpu;
        let big = seeded_noise(7, (1, 4, 64, 96), &dev).unwrap();
        let small = pooled_noise(7, (1, 4, 32, 48), (64, 96), &dev)
            .unwrap()
            .expect("a 2× grid");
        let expected = (big.avg_pool2d(2).unwrap() * 2.0).unwrap();
        let diff = (&small - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        // still standard normal per element
        let v: Vec<f32> = small.flatten_all().unwrap().to_vec1().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.08,
            "{mean} {var}"
        );
        // grids that are not a whole multiple, or the same size, keep their own noise
        assert!(pooled_noise(7, (1, 4, 30, 48), (64, 96), &dev)
            .unwrap()
            .is_none());
        assert!(pooled_noise(7, (1, 4, 32, 32), (64, 96), &dev)
            .unwrap()
            .is_none());
        assert!(pooled_noise(7, (1, 4, 64, 96), (64, 96), &dev)
            .unwrap()
            .is_none());
    }

    #[test]
    fn seeded_draws_come_from_their_own_streams() {
        let dev = Device::Cpu;
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let like = Tensor::zeros((1, 4, 2, 3), DType::F32, &dev).unwrap();
        let mut source = NoiseSource::new(5, None);
        let first = source
            .renoise(RenoiseDraw::Evaluation(0), &like, &dev)
            .unwrap();
        let second = source
            .renoise(RenoiseDraw::Evaluation(1), &like, &dev)
            .unwrap();
        // one stream from seed + 2, drawn in order
        let stream = seeded_noise(7, (2, 4, 2, 3), &dev).unwrap();
        assert_eq!(values(&first), values(&stream.get(0).unwrap()));
        assert_eq!(values(&second), values(&stream.get(1).unwrap()));
        let vae = source.vae(&[1, 4, 2, 3], &dev).unwrap();
        assert_eq!(
            values(&vae),
            values(&seeded_noise(6, (1, 4, 2, 3), &dev).unwrap())
        );
        let initial = source.initial((1, 4, 2, 3), None, &dev).unwrap();
        assert_eq!(
            values(&initial),
            values(&seeded_noise(5, (1, 4, 2, 3), &dev).unwrap())
        );
    }

    #[test]
    fn recorded_draws_are_indexed_and_counted() {
        let dev = Device::Cpu;
        let like = Tensor::zeros((1, 4, 2, 3), DType::F32, &dev).unwrap();
        let recorded = RecordedNoise {
            vae_noise: like.clone(),
            step_noise: seeded_noise(1, (2, 4, 2, 3), &dev)
                .unwrap()
                .unsqueeze(1)
                .unwrap(),
        };
        let mut source = NoiseSource::new(5, Some(&recorded));
        let second = source.renoise(RenoiseDraw::Step(1), &like, &dev).unwrap();
        let diff = (second - recorded.step_noise.get(1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        let err = source
            .renoise(RenoiseDraw::Step(2), &like, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("step_noise has 2 draws; step 2 needs one more"),
            "{err}"
        );
        let err = source.vae(&[1, 4, 4, 4], &dev).err().unwrap().to_string();
        assert!(err.contains("recorded vae_noise has shape"), "{err}");
    }
}
