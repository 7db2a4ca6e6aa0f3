//! The headless front end: `glichen generate | fetch | models | layout-from-png | make-map | bench`. A thin shell over
//! the library; errors become readable messages here (anyhow), never panics.

pub mod bench;
pub mod make_map;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use glichen::layout::{import::ImportFormat, SchedulerKind};
use glichen::pipeline::{self, CancelToken, GenerateOptions, GligenModel, PipelineError};
use glichen::weights;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "glichen",
    version,
    about = "Grounded text-to-image generation (GLIGEN) with candle"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Render a layout to a PNG (and optionally its final latents).
    Generate(GenerateArgs),
    /// Download a catalogue model (or any hub repo id) into the Hugging Face cache.
    Fetch {
        /// Catalogue name (see `glichen models`) or hub repo id.
        name: String,
    },
    /// List the catalogue of known GLIGEN checkpoints.
    Models,
    /// Print the layout JSON embedded in a PNG that Glichen wrote.
    LayoutFromPng { image: PathBuf },
    /// Time the pipeline's parts, optionally beside diffusers.
    Bench(bench::BenchArgs),
    /// Make a spatial map from a picture (Canny, depth, normals, HED, ADE20K classes), as the
    /// studio's map slot makes it.
    MakeMap(make_map::MakeMapArgs),
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A diffusers model folder, an original GLIGEN checkpoint file, a catalogue name or a hub repo id.
    #[arg(long)]
    pub model: String,
    /// The layout: a Glichen layout JSON or PNG, diffusers arguments, GLIGEN meta or COCO
    /// annotations (whatever the studio opens).
    #[arg(long)]
    pub layout: PathBuf,
    /// Output picture, by extension: `.png` (carries the layout in a `glichen-layout` text
    /// chunk), `.jpg`/`.jpeg` or `.webp` (lossless; neither carries the layout).
    #[arg(long, default_value = "out.png")]
    pub out: PathBuf,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Scheduled sampling: fraction of the steps in which grounding acts.
    #[arg(long)]
    pub alpha0: Option<f64>,
    /// Fraction of the steps over which grounding fades out after α₀ (the original code's decay).
    #[arg(long)]
    pub alpha_decay: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_parser = clap::builder::ValueParser::new(parse_scheduler))]
    pub scheduler: Option<SchedulerKind>,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Start from the tensor `latents` of this safetensors file instead of seeded noise.
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Write the final latents (before VAE decoding) as tensor `latents`.
    #[arg(long)]
    pub save_latents: Option<PathBuf>,
    /// Recorded noise draws (`vae_noise`, `step_noise`) for grounded inpainting.
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Write a cheap latent preview PNG per step into this folder.
    #[arg(long)]
    pub previews: Option<PathBuf>,
    /// Original text-image checkpoints: the CLIP image tower (a transformers CLIP folder or a hub
    /// repo id). Default: an `image_encoder/` folder beside the checkpoint, else
    /// openai/clip-vit-large-patch14 from the hub, as the original code.
    #[arg(long)]
    pub image_encoder: Option<String>,
    /// Original spatial-map checkpoints (hed, canny, depth, normal, sem): Stable Diffusion's own
    /// first conv, which they switch to when grounding ends (a torch file with `weight` and
    /// `bias`, or weights with `conv_in.*`). Default: SD_input_conv_weight_bias.pth beside the
    /// checkpoint, else masterful/gligen-1-4-generation-text-box in the Hugging Face cache.
    #[arg(long)]
    pub sd_conv_in: Option<PathBuf>,
    /// The TAESD preview decoder (a folder, `taesd` from the catalogue, or a hub repo id): the
    /// `--previews` pictures become TAESD decodes of each step's predicted picture.
    #[arg(long)]
    pub preview_decoder: Option<String>,
    /// Run even when the estimated peak memory exceeds what the machine has available (the
    /// estimate errs high; with swap a run that does not fit pages slowly instead of failing).
    #[arg(long)]
    pub ignore_memory_check: bool,
}

fn parse_scheduler(s: &str) -> std::result::Result<SchedulerKind, String> {
    s.parse::<SchedulerKind>().map_err(|e| e.to_string())
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Fetch { name }) => {
            let source = weights::resolve_model(&name, true)?;
            println!("{}", describe_source(&source));
            Ok(())
        }
        Some(Command::Models) => {
            for e in weights::catalogue::entries() {
                println!(
                    "{:<40} {:<45} {:<22} {}",
                    e.name,
                    format!("{}@{}", e.repo, e.revision),
                    e.modality,
                    e.description
                );
            }
            Ok(())
        }
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::MakeMap(args)) => make_map::run(&args),
        Some(Command::LayoutFromPng { image }) => {
            let json =
                glichen::layout::png::read_layout_chunk(&image).map_err(anyhow::Error::msg)?;
            // Printed only once it reads as a layout: a chunk of anything else is not ours.
            glichen::layout::Layout::from_json_str(&json)
                .map_err(|e| anyhow::anyhow!("{}: the embedded layout: {e}", image.display()))?;
            println!("{json}");
            Ok(())
        }
        // No subcommand: open the studio window.
        #[cfg(feature = "studio")]
        None => glichen::ui::run_studio(),
        #[cfg(not(feature = "studio"))]
        None => anyhow::bail!(
            "this build has no studio (built without the `studio` feature); run a subcommand, \
             e.g. `glichen generate --help`"
        ),
    }
}

fn describe_source(source: &weights::ModelSource) -> String {
    match source {
        weights::ModelSource::Folder(p) => p.display().to_string(),
        weights::ModelSource::OriginalCheckpoint(p) => p.display().to_string(),
    }
}

/// [`glichen::fsio::write_atomic_creating_folder`] with the path in the error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    glichen::fsio::write_atomic_creating_folder(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The picture format `--out` asks for, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutFormat {
    Png,
    Jpeg,
    WebP,
}

impl OutFormat {
    fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            None | Some("png") => Ok(OutFormat::Png),
            Some("jpg" | "jpeg") => Ok(OutFormat::Jpeg),
            Some("webp") => Ok(OutFormat::WebP),
            Some(other) => bail!(
                "--out {}: Glichen writes .png, .jpg/.jpeg or .webp pictures, not .{other}",
                path.display()
            ),
        }
    }

    /// Encodes the picture; only PNG carries the layout.
    fn encode(self, img: &image::RgbImage, layout_json: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        match self {
            OutFormat::Png => {
                return glichen::layout::png::encode_png_with_layout(img, layout_json)
                    .map_err(anyhow::Error::msg)
            }
            OutFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
                .encode_image(img)?,
            OutFormat::WebP => image::codecs::webp::WebPEncoder::new_lossless(&mut bytes).encode(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )?,
        }
        Ok(bytes)
    }
}

/// Safetensors bytes holding `latents` as f32 on the CPU.
fn latents_file_bytes(latents: &candle_core::Tensor) -> Result<Vec<u8>> {
    let t = latents
        .to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?;
    Ok(safetensors::serialize([("latents", &t)], None)?)
}

fn generate(args: GenerateArgs) -> Result<()> {
    // Checked before the model loads, so that a typo costs nothing.
    let out_format = OutFormat::of(&args.out)?;
    let imported = glichen::layout::import::import_file(&args.layout)?;
    if imported.format != ImportFormat::Layout {
        tracing::info!("{}: read as {}", args.layout.display(), imported.format);
    }
    let mut layout = imported.layout;
    // Command-line settings override the layout's and are recorded in the written PNG.
    let s = &mut layout.sampling;
    if args.steps.is_some() {
        s.steps = args.steps;
    }
    if args.guidance.is_some() {
        s.guidance_scale = args.guidance;
    }
    if args.alpha0.is_some() {
        s.alpha0 = args.alpha0;
    }
    if args.alpha_decay.is_some() {
        s.alpha_decay = args.alpha_decay;
    }
    if args.seed.is_some() {
        s.seed = args.seed;
    }
    if args.scheduler.is_some() {
        s.scheduler = args.scheduler;
    }
    layout
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.layout.display()))?;
    if args.noise.is_some() && layout.inpaint.is_none() {
        tracing::warn!("--noise is only used for grounded inpainting; this layout has no `inpaint` image, so it is ignored");
    }
    let init = match &args.init_latents {
        Some(p) => Some(pipeline::read_latents_tensor(p, "latents")?),
        None => None,
    };

    let device = pipeline::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let dtype = pipeline::parse_dtype(&args.dtype).map_err(anyhow::Error::msg)?;
    let source = weights::resolve_model(&args.model, true)?;
    let started = std::time::Instant::now();
    let load_options = pipeline::LoadOptions {
        image_encoder: args.image_encoder.clone(),
        sd_conv_in: args.sd_conv_in.clone(),
        preview_decoder: args.preview_decoder.clone(),
        progress: weights::Progress::Terminal,
    };
    let model = GligenModel::load_with(&source, &device, dtype, &load_options)?;
    tracing::info!("loaded {} in {:.1?}", model.name, started.elapsed());

    let mut options = GenerateOptions::from_layout(&layout, model.default_scheduler);
    options.decode = true;
    if args.ignore_memory_check {
        options.memory_check = pipeline::MemoryCheck::Off;
    }
    if layout.sampling.seed.is_none() {
        layout.sampling.seed = Some(options.seed);
    }

    let bar = indicatif::ProgressBar::new(options.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if let Some(dir) = &args.previews {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut preview_error = None;
    let cancel = CancelToken::new();
    let inputs = pipeline::GenerateInputs {
        init_latents: init,
        noise: match &args.noise {
            Some(p) if layout.inpaint.is_some() => Some(pipeline::RecordedNoise::load(p)?),
            _ => None,
        },
        base_dir: glichen::layout::Layout::base_dir(&args.layout).map(Path::to_path_buf),
        on_phase: Some(pipeline::PhaseHook(std::sync::Arc::new({
            let bar = bar.clone();
            move |phase| bar.set_message(phase.to_string())
        }))),
    };
    let result = model.generate_with(
        &layout,
        &options,
        &inputs,
        &mut |u| {
            if u.partial {
                return;
            }
            bar.set_position(u.step as u64 + 1);
            bar.set_message(format!("t={} grounding {:.2}", u.timestep, u.gate_scale));
            if let Some(dir) = &args.previews {
                let path = dir.join(format!("step_{:03}.png", u.step));
                let rgb = if model.preview_decoder.is_some() {
                    model.preview_rgb(u.pred_x0).map_err(anyhow::Error::from)
                } else {
                    pipeline::preview::latents_to_rgb(u.pred_x0).map_err(anyhow::Error::from)
                };
                let res = rgb.and_then(|img| {
                    img.save(&path)
                        .with_context(|| format!("writing {}", path.display()))
                });
                if let Err(e) = res {
                    preview_error.get_or_insert(e);
                }
            }
        },
        &cancel,
    );
    bar.finish_and_clear();
    let generated = match result {
        Ok(g) => g,
        Err(PipelineError::Cancelled) => bail!("cancelled"),
        Err(e) => return Err(e.into()),
    };
    if let Some(e) = preview_error {
        tracing::warn!("previews: {e:#}");
    }
    for w in &generated.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(path) = &args.save_latents {
        write_atomic(path, &latents_file_bytes(&generated.latents)?)?;
    }
    if let Some(img) = &generated.image {
        let bytes = out_format.encode(img, &layout.to_json_pretty()?)?;
        write_atomic(&args.out, &bytes)?;
        if out_format != OutFormat::Png {
            eprintln!(
                "note: {} does not carry the layout (only PNG does); save the layout separately to reuse it",
                args.out.display()
            );
        }
        eprintln!(
            "wrote {} (seed {}, {:.1?})",
            args.out.display(),
            generated.seed,
            started.elapsed()
        );
    }
    Ok(())
}
