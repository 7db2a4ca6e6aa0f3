//! A generation's peak memory, estimated from the model's configs before it starts, and the
//! refusal of one that cannot fit: a 2048×2048 canvas on a CPU otherwise pages for minutes or is
//! killed by the kernel halfway, taking the studio's unsaved work with it.
//!
//! The estimate counts what is alive at the worst moment of each stage, as this crate's networks
//! hold it (Rust keeps a shadowed `let` alive to the end of its scope, so a resnet holds its input,
//! its first norm's output, the shortcut and three more maps of its width at once), read from the
//! UNet, VAE and TAESD configs: the UNet's skip connections plus its widest block (a transformer's
//! feed-forward holds its GEGLU projection, 8 × the channels, over every token), the attention
//! scores as the kernels chunk them, and the VAE's first resnet at full resolution, whose input is
//! `block_out_channels[1]` wide, the largest single stage of a Stable Diffusion run. The UNet's
//! activations are freed before the decode, so the peak is the larger of the two. It was
//! calibrated against measured peaks (`glichen bench` rows at Stable Diffusion's sizes, `glichen
//! generate` with the tiny model; README, Reliability): 8–17 % above them where activations
//! dominate, never below.
//!
//! Only the CPU's free memory can be read (`/proc/meminfo` and the cgroup's limit, Linux); other
//! devices are not checked.

use super::{GenerateOptions, GligenModel};
use crate::layout::Layout;
use crate::model::{UNetConfig, VaeConfig};
use candle_core::{DType, Device};

/// Environment variable that turns the check against the machine's memory off (for a studio user
/// with swap, or who knows better).
pub const IGNORE_MEMORY_CHECK_ENV: &str = "GLICHEN_IGNORE_MEMORY_CHECK";

/// Whether a generation is compared with the memory it would need before it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryCheck {
    /// Refuse a generation that needs more than the device has available now (CPU on Linux;
    /// unchecked elsewhere, and when [`IGNORE_MEMORY_CHECK_ENV`] is set).
    #[default]
    Available,
    /// Refuse one that needs more than this many bytes (a server's own budget; tests).
    Limit(u64),
    /// Run whatever the estimate says (`generate --ignore-memory-check`).
    Off,
}

/// Live values of a transformer block at its peak, the fuser's feed-forward, in units of its width
/// × tokens: the Transformer2D's residual and norm, the block's input, its first residual sum, the
/// fuser's joint tokens, attention output, sum and norm, and GEGLU's projection (8× the width:
/// twice the 4× inner width) twice, as the product and as the product plus its bias.
const TRANSFORMER_LIVE: u64 = 2 + 6 + 2 * 8;
/// The measured peaks are 1.07× (VAE decode) to 1.16× (UNet) what the counts say: allocator slack
/// (the binary keeps freed buffers in the heap, see `src/main.rs`) and transients the counts leave
/// out. A quarter more keeps the estimate above every measured peak.
const HEADROOM_QUARTERS: u64 = 5;
/// TAESD's residual block at full resolution: its input, three shadowed convolution outputs, the
/// sum and its ReLU, and the upsampled input before them.
const TAESD_LIVE: u64 = 8;
/// What grows with the canvas but is no network's: latents, the predicted x0 and its preview
/// frame, the scheduler's history (PLMS keeps four noise predictions), the final RGB pixels.
const LATENT_COPIES: u64 = 12;

/// A generation's estimated peak memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The loaded networks' tensors (already resident when a generation starts).
    pub weights: u64,
    /// One UNet evaluation's activations at their peak, both guidance halves.
    pub unet: u64,
    /// The largest decode or encode at full resolution (VAE decode, TAESD preview or finish,
    /// inpainting's VAE encode).
    pub decode: u64,
    /// The canvas, in pixels.
    pub width: u32,
    pub height: u32,
    /// UNet batch: 2 with classifier-free guidance, else 1.
    pub batch: usize,
    pub dtype: DType,
}

impl MemoryEstimate {
    /// What a generation adds to the loaded model at its peak.
    pub fn activations(&self) -> u64 {
        self.unet.max(self.decode)
    }

    /// Weights and activations.
    pub fn total(&self) -> u64 {
        self.weights + self.activations()
    }
}

/// A generation refused because its estimated peak does not fit the memory available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this {}×{} generation needs about {} of memory for its activations (batch {}, {}; {} in all \
     with the {} of weights) but {} is available: make the canvas smaller, or set \
     {IGNORE_MEMORY_CHECK_ENV}=1 (the command line's --ignore-memory-check) to try anyway",
    estimate.width,
    estimate.height,
    bytes(estimate.activations()),
    estimate.batch,
    estimate.dtype.as_str(),
    bytes(estimate.total()),
    bytes(estimate.weights),
    bytes(*available)
)]
pub struct NotEnoughMemory {
    pub estimate: MemoryEstimate,
    pub available: u64,
}

/// `31.2 GiB`, `812.0 MiB`, `96.0 KiB`: one decimal, binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl GligenModel {
    /// The estimated peak memory of generating `layout` with `options` on this model.
    pub fn memory_estimate(&self, layout: &Layout, options: &GenerateOptions) -> MemoryEstimate {
        let f = self.vae_scale_factor().max(1);
        let grid = (
            (layout.height as usize / f).max(1),
            (layout.width as usize / f).max(1),
        );
        let batch = if self.origin.guides(options.guidance_scale) {
            2
        } else {
            1
        };
        let fused = self.device.is_cpu() && self.dtype == DType::F32;
        let size = self.dtype.size_in_bytes() as u64;
        let unet = unet_bytes(&self.unet.config, grid, batch, size, fused);
        let full = grid.0 as u64 * grid.1 as u64 * (f * f) as u64;
        let mut decode = 0;
        if options.decode {
            decode = decode.max(vae_decode_elements(&self.vae.config, grid, fused) * size);
        }
        if let Some(taesd) = &self.preview_decoder {
            // per-step previews at full resolution, and a draft's finish
            let widest = taesd.config.decoder_block_out_channels.iter().max();
            decode = decode.max(TAESD_LIVE * *widest.unwrap_or(&64) as u64 * full * size);
        }
        if layout.inpaint.is_some() {
            decode = decode.max(vae_encode_elements(&self.vae.config, full) * size);
        }
        let latents = LATENT_COPIES * self.latent_channels() as u64 * full / (f * f) as u64 * 4;
        // the decoded picture, its f32 copy and the RGB8 image
        let rgb = 3 * full * (4 + 4 + 1);
        let headroom = |b: u64| b / 4 * HEADROOM_QUARTERS;
        MemoryEstimate {
            weights: self.loaded_from.tensor_bytes,
            unet: headroom(unet + latents),
            decode: headroom(decode + latents + rgb),
            width: layout.width,
            height: layout.height,
            batch,
            dtype: self.dtype,
        }
    }
}

/// Refuses the generation when its estimate exceeds what `options.memory_check` allows.
pub(super) fn check(
    model: &GligenModel,
    layout: &Layout,
    options: &GenerateOptions,
) -> Result<(), NotEnoughMemory> {
    let available = match options.memory_check {
        MemoryCheck::Off => return Ok(()),
        MemoryCheck::Limit(bytes) => bytes,
        MemoryCheck::Available => {
            if std::env::var_os(IGNORE_MEMORY_CHECK_ENV).is_some_and(|v| !v.is_empty() && v != "0")
            {
                return Ok(());
            }
            match available(&model.device) {
                Some(bytes) => bytes,
                None => {
                    tracing::debug!(
                        "memory check skipped: the free memory of {:?} cannot be read",
                        model.device
                    );
                    return Ok(());
                }
            }
        }
    };
    let estimate = model.memory_estimate(layout, options);
    tracing::debug!(
        "memory estimate for {}×{}: weights {}, UNet {}, decode {}; {} available",
        estimate.width,
        estimate.height,
        estimate.weights,
        estimate.unet,
        estimate.decode,
        available
    );
    if estimate.activations() > available {
        return Err(NotEnoughMemory {
            estimate,
            available,
        });
    }
    Ok(())
}

/// The channels, pixel count and attention of each UNet level, top (latent size) first.
fn unet_levels(cfg: &UNetConfig, (h, w): (usize, usize)) -> Vec<(u64, u64, bool)> {
    let n = cfg.block_out_channels.len();
    let (mut h, mut w) = (h, w);
    let mut levels = Vec::with_capacity(n);
    for (i, &c) in cfg.block_out_channels.iter().enumerate() {
        let attention = cfg
            .down_block_types
            .get(i)
            .is_some_and(|t| t.contains("Attn"))
            || cfg
                .up_block_types
                .get(n - 1 - i)
                .is_some_and(|t| t.contains("Attn"));
        levels.push((c as u64, (h * w) as u64, attention));
        // a stride-2 3×3 convolution with padding 1
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
    }
    levels
}

/// One UNet evaluation at its peak: the skip connections of both batch halves, the widest block,
/// and the attention and convolution scratch as the kernels allocate it.
fn unet_bytes(cfg: &UNetConfig, grid: (usize, usize), batch: usize, size: u64, fused: bool) -> u64 {
    let levels = unet_levels(cfg, grid);
    let n = levels.len();
    let layers = cfg
        .layers_per_block
        .resolve(n, "layers_per_block")
        .unwrap_or_else(|_| vec![2; n]);
    let (c0, p0, _) = levels.first().copied().unwrap_or((0, 0, false));
    let mut skips = c0 * p0;
    let mut widest = 0u64;
    let mut im2col = 0u64;
    let mut tokens = 0u64;
    for (i, &(c, p, attention)) in levels.iter().enumerate() {
        skips += layers[i] as u64 * c * p;
        let below = levels.get(i + 1);
        if let Some(&(_, p_below, _)) = below {
            skips += c * p_below;
        }
        // the up pass: a resnet holds the popped skip, its concatenated input twice (the input
        // and the first norm's output) and four maps of its width
        let c_from_below = below.map_or(c, |&(cb, _, _)| cb);
        let c_in = c + c_from_below.max(c);
        let resnet = c + 2 * c_in + 4 * c;
        // the upsampler that brings the level below up to this size: its input, the nearest
        // upsample and its convolution
        let upsample = below.map_or(0, |&(cb, pb, _)| cb * (pb + 2 * p));
        let transformer = if attention {
            TRANSFORMER_LIVE * c * p
        } else {
            0
        };
        widest = widest.max(resnet).max(upsample).max(transformer);
        im2col = im2col.max(9 * c_in * p);
        if attention {
            tokens = tokens.max(p);
        }
    }
    let batch = batch as u64;
    let mut total = batch * (skips + widest) * size;
    let threads = rayon::current_num_threads() as u64;
    if fused {
        // each kernel thread keeps one score block or one im2col tile (f32)
        let scores = crate::model::cpu_ops::QUERY_BLOCK as u64 * (tokens + 30);
        let tile = crate::model::cpu_ops::CONV_TILE_ELEMENTS as u64;
        total += threads * scores.max(tile) * 4;
    } else {
        // candle's generic path: a whole im2col matrix, and a chunk of scores, its softmax and
        // their cast to the model's dtype
        let chunk = (batch * tokens * (tokens + 30))
            .min(crate::model::attention::ATTENTION_BLOCK_ELEMENTS as u64);
        total += batch * im2col * size + 3 * chunk * 4;
    }
    total
}

/// The VAE decode at its peak, in elements: its widest block, usually the first resnet of the
/// last up block at full resolution.
fn vae_decode_elements(cfg: &VaeConfig, (h, w): (usize, usize), fused: bool) -> u64 {
    let rev: Vec<u64> = cfg
        .block_out_channels
        .iter()
        .rev()
        .map(|&c| c as u64)
        .collect();
    let mut p = (h * w) as u64;
    let mut widest = rev.first().map_or(0, |&c| 6 * c * p);
    let mut im2col = 0;
    for (j, &c) in rev.iter().enumerate() {
        let c_in = if j == 0 { c } else { rev[j - 1] };
        widest = widest.max((2 * c_in + 4 * c) * p);
        im2col = im2col.max(9 * c_in * p);
        if j + 1 < rev.len() {
            // the upsampler: its input, the nearest upsample and its convolution at 4× the pixels
            widest = widest.max(c * (p + 2 * 4 * p));
            im2col = im2col.max(9 * c * 4 * p);
            p *= 4;
        }
    }
    if fused {
        widest
    } else {
        widest + im2col
    }
}

/// Inpainting's VAE encode of the picture at full resolution (`full` pixels): the picture, the
/// first down block's resnet and the input it holds.
fn vae_encode_elements(cfg: &VaeConfig, full: u64) -> u64 {
    let c = cfg.block_out_channels.first().copied().unwrap_or(128) as u64;
    3 * full + 7 * c * full
}

/// Bytes `device` can still give, when that can be read: on Linux for the CPU, `MemAvailable`
/// capped by the cgroup's `memory.max` less its `memory.current` (a container's limit is what
/// gets a process killed), plus what this process's heap holds free.
pub fn available(device: &Device) -> Option<u64> {
    if !device.is_cpu() {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let host = meminfo_field(&meminfo, "MemAvailable:")?;
    Some(cgroup_room().map_or(host, |room| room.min(host)) + heap_free())
}

/// Bytes free inside this process's heap (glibc): the binary keeps freed activations there
/// (`src/main.rs`), so the last generation's buffers, which the system counts as used, are room
/// for the next one.
fn heap_free() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        info.fordblks as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// A `/proc/meminfo` field in bytes.
fn meminfo_field(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The room left under the tightest `memory.max` of this process's cgroup (v2) and its parents.
fn cgroup_room() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir = std::path::PathBuf::from("/sys/fs/cgroup");
    dir.push(path.trim_start_matches('/'));
    let mut room: Option<u64> = None;
    loop {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let (Some(max), Some(current)) = (read("memory.max"), read("memory.current")) {
            if let (Ok(max), Ok(current)) =
                (max.trim().parse::<u64>(), current.trim().parse::<u64>())
            {
                let here = max.saturating_sub(current);
                room = Some(room.map_or(here, |r| r.min(here)));
            }
        }
        if !dir.pop() || !dir.starts_with("/sys/fs/cgroup") {
            return room;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(96 * 1024), "96.0 KiB");
        assert_eq!(bytes(812 << 20), "812.0 MiB");
        assert_eq!(bytes((31.2 * (1u64 << 30) as f64) as u64), "31.2 GiB");
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   19400000 kB\n";
        assert_eq!(
            meminfo_field(text, "MemAvailable:"),
            Some(19_400_000 * 1024)
        );
        assert_eq!(meminfo_field(text, "SwapFree:"), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        if cfg!(target_os = "linux") {
            assert!(available(&Device::Cpu).is_some_and(|b| b > 0));
        }
    }

    fn sd14() -> (UNetConfig, VaeConfig) {
        let unet: UNetConfig = serde_json::from_str("{}").unwrap();
        let vae: VaeConfig = serde_json::from_str(
            r#"{"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2}"#,
        )
        .unwrap();
        (unet, vae)
    }

    #[test]
    fn stable_diffusion_at_512_peaks_in_the_vae_decode() {
        let (unet, vae) = sd14();
        // 64×64 latents, guided, f32 on the CPU
        let unet = unet_bytes(&unet, (64, 64), 2, 4, true);
        let decode = vae_decode_elements(&vae, (64, 64), true) * 4;
        // the first resnet of the last up block: 256 channels in, 128 out, 512×512
        assert_eq!(decode, (2 * 256 + 4 * 128) * 512 * 512 * 4);
        // 29 maps of the top level (320 channels × 64×64, both halves): the skips and the fuser
        let map = 2 * 320 * 64 * 64 * 4;
        assert!(
            (29 * map..30 * map).contains(&unet),
            "{}",
            unet as f64 / map as f64
        );
        assert!(unet < decode, "{unet} ≥ {decode}");
    }
}
