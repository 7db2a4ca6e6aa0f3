//! `glichen make-map`: the studio's map makers from the command line, through the same
//! `maps::make` the studio uses, so a map made here is the map the studio would keep.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use glichen::maps::make::{self, Estimators, MapRecipe};
use std::path::PathBuf;

/// What to make a map from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipeArg {
    /// Canny edges of a photo (`--low`, `--high`: OpenCV's thresholds).
    Canny,
    /// Depth estimated from a photo (the depth network; near = bright).
    Depth,
    /// Normals from a photo, through estimated depth.
    Normal,
    /// Normals from a depth picture (near = bright).
    NormalFromDepth,
    /// HED edges of a photo (the HED network).
    Hed,
    /// Class indices from a segmentation coloured in the ADE20K palette.
    Sem,
}

#[derive(Args, Debug)]
pub struct MakeMapArgs {
    /// What to make.
    #[arg(value_enum)]
    pub recipe: RecipeArg,
    /// The picture (PNG, JPEG or WebP) to make it from; centre-cropped to a square as the
    /// pipeline crops maps.
    pub input: PathBuf,
    /// Where to write the map (PNG).
    #[arg(long, default_value = "map.png")]
    pub out: PathBuf,
    /// The map's side in pixels: the canvas side (512 for the released checkpoints).
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    #[arg(long, default_value_t = 100.0)]
    pub low: f32,
    #[arg(long, default_value_t = 200.0)]
    pub high: f32,
    /// The depth network: a folder, a catalogue name or a hub repo id.
    #[arg(long, default_value = make::DEFAULT_DEPTH_MODEL)]
    pub depth_model: String,
    /// The HED network: a `.pth`/`.safetensors` file, a folder, a catalogue name or a hub repo id.
    #[arg(long, default_value = make::DEFAULT_HED_MODEL)]
    pub hed_model: String,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The largest map side accepted (the picture limit of layouts).
const MAX_SIDE: u32 = 16_384;

pub fn run(args: &MakeMapArgs) -> Result<()> {
    if args.size == 0 || args.size > MAX_SIDE {
        anyhow::bail!("--size must be 1..={MAX_SIDE} pixels, got {}", args.size);
    }
    let recipe = match args.recipe {
        RecipeArg::Canny => MapRecipe::Canny {
            low: args.low,
            high: args.high,
        },
        RecipeArg::Depth => MapRecipe::DepthFromPhoto,
        RecipeArg::Normal => MapRecipe::NormalsFromPhoto,
        RecipeArg::NormalFromDepth => MapRecipe::NormalsFromDepth,
        RecipeArg::Hed => MapRecipe::HedFromPhoto,
        RecipeArg::Sem => MapRecipe::ClassesFromColours,
    };
    let input = args.input.display().to_string();
    let picture = glichen::layout::read_picture(&input, None)
        .and_then(|bytes| glichen::layout::decode_picture(&bytes))
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading {input}"))?;
    let device = glichen::pipeline::parse_device(&args.device).map_err(anyhow::Error::msg)?;
    let mut estimators = Estimators::new(device, &args.depth_model, &args.hed_model);
    let map = make::make_map(recipe, &picture, args.size, &mut estimators)
        .with_context(|| format!("making {} from {input}", recipe.describe()))?;
    let mut bytes = Vec::new();
    map.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .context("encoding the map as PNG")?;
    super::write_atomic(&args.out, &bytes)?;
    println!(
        "{}: {} map ({}, {}×{})",
        args.out.display(),
        recipe.kind(),
        recipe.describe(),
        map.width(),
        map.height()
    );
    Ok(())
}
