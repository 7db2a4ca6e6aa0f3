//! `--breakdown`: times the UNet's parts (resnet, norms, attention, fuser, feed-forward, ...) at
//! each of its resolutions and prints where a step's time goes.

use super::random::random_var_builder;
use super::rows::{cell, fmt_secs, RowResult};
use super::system::cpu_model;
use super::timing::measure;
use super::{dtype_name, BenchArgs};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use glichen::model::Grounding;
use glichen::pipeline;
use std::collections::HashMap;

/// One part of the UNet at one resolution, for `--breakdown`.
struct Part {
    level: String,
    name: &'static str,
    calls: usize,
    result: RowResult,
}

/// Times the UNet's parts at each resolution of SD 1.4's UNet with CFG (batch 2); `calls` is how
/// often a step runs that part at that resolution (down + up blocks; the mid block at 8×8).
fn breakdown_parts(args: &BenchArgs, dev: &Device, dtype: DType) -> Result<Vec<Part>> {
    use candle_core::Module;
    use glichen::model::attention::{scaled_dot_product_attention, Attention, FeedForward};
    use glichen::model::blocks::{conv2d, ResnetBlock2D, ResnetBlock2DConfig};
    use glichen::model::cpu_ops;
    use glichen::model::transformer::{
        GatedSelfAttentionDense, Transformer2DConfig, Transformer2DModel,
    };
    let dn = dtype_name(dtype);
    let (w, r) = (args.warmup, args.runs);
    let lat = args.size / 8;
    let heads = 8;
    let cross = 768;
    let temb_dim = 1280;
    let vb = random_var_builder(dtype, dev, HashMap::new());
    let context = Tensor::randn(0f32, 1f32, (2, 77, cross), dev)?.to_dtype(dtype)?;
    let objs = Tensor::randn(0f32, 1f32, (2, pipeline::MAX_GROUNDING_SLOTS, cross), dev)?
        .to_dtype(dtype)?;
    let grounding = Grounding {
        objs,
        gate_scale: 1.0,
    };
    let temb = Tensor::randn(0f32, 1f32, (2, temb_dim), dev)?.to_dtype(dtype)?;
    let mut parts = Vec::new();
    // (channels, latent side, transformer calls, resnet calls) per resolution.
    let levels = [
        (320, lat, 5, 5),
        (640, lat / 2, 5, 5),
        (1280, lat / 4, 5, 5),
        (1280, lat / 8, 1, 7),
    ];
    for (i, &(c, hw, n_tf, n_res)) in levels.iter().enumerate() {
        let level = format!("{hw}×{hw}×{c}");
        let vb = vb.pp(format!("level{i}"));
        let n = hw * hw;
        let map = Tensor::randn(0f32, 1f32, (2, c, hw, hw), dev)?.to_dtype(dtype)?;
        let tokens = Tensor::randn(0f32, 1f32, (2, n, c), dev)?.to_dtype(dtype)?;
        let key = |name: &str| format!("{level} {name}");
        let mut push = |name: &'static str, calls: usize, result: RowResult| {
            eprintln!(
                "  {level} {name}: {}",
                result
                    .median_s
                    .map(fmt_secs)
                    .unwrap_or_else(|| format!("{:?}", result.error))
            );
            parts.push(Part {
                level: level.clone(),
                name,
                calls,
                result,
            });
        };
        let resnet = ResnetBlock2D::new(
            vb.pp("resnet"),
            c,
            ResnetBlock2DConfig {
                out_channels: Some(c),
                temb_channels: Some(temb_dim),
                groups: 32,
                groups_out: None,
                eps: 1e-5,
                use_in_shortcut: None,
                output_scale_factor: 1.0,
            },
        )?;
        push(
            "resnet block (2× GroupNorm+SiLU+conv3×3)",
            n_res,
            measure(dev, &key("resnet"), dn, w, r, || {
                resnet.forward(&map, Some(&temb))
            }),
        );
        let conv = conv2d(
            c,
            c,
            3,
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
            vb.pp("conv"),
        )?;
        push(
            "  of which one conv3×3",
            2 * n_res,
            measure(dev, &key("conv3x3"), dn, w, r, || conv.forward(&map)),
        );
        let gn = candle_nn::group_norm(32, c, 1e-5, vb.pp("gn"))?;
        push(
            "  of which one GroupNorm",
            2 * n_res + n_tf,
            measure(dev, &key("groupnorm"), dn, w, r, || gn.forward(&map)),
        );
        if n_tf == 0 {
            continue;
        }
        let tf = Transformer2DModel::new(
            vb.pp("tf"),
            Transformer2DConfig {
                channels: c,
                heads,
                layers: 1,
                norm_num_groups: 32,
                cross_attention_dim: cross,
                use_linear_projection: false,
                gated: true,
            },
        )?;
        push(
            "transformer (GN, proj, block, proj), fuser on",
            n_tf,
            measure(dev, &key("transformer"), dn, w, r, || {
                tf.forward(&map, &context, Some(&grounding))
            }),
        );
        let ln = candle_nn::layer_norm(c, 1e-5, vb.pp("ln"))?;
        push(
            "  LayerNorm",
            5 * n_tf,
            measure(dev, &key("layernorm"), dn, w, r, || ln.forward(&tokens)),
        );
        let attn1 = Attention::new(vb.pp("attn1"), c, None, heads, c / heads)?;
        push(
            "  self-attention (attn1)",
            n_tf,
            measure(dev, &key("attn1"), dn, w, r, || {
                attn1.forward(&tokens, None)
            }),
        );
        let dh = c / heads;
        // The core as the layer runs it: fused on the CPU in f32, else split into heads.
        let fused = cpu_ops::fused_cpu(&tokens);
        let q = if fused {
            Tensor::randn(0f32, 1f32, (2, n, c), dev)?.to_dtype(dtype)?
        } else {
            Tensor::randn(0f32, 1f32, (2 * heads, n, dh), dev)?.to_dtype(dtype)?
        };
        push(
            "    of which softmax(QKᵀ)V core",
            n_tf,
            measure(dev, &key("sdpa"), dn, w, r, || {
                let scale = 1.0 / (dh as f64).sqrt();
                if fused {
                    cpu_ops::multi_head_attention(&q, &q, &q, heads, scale as f32)
                } else {
                    scaled_dot_product_attention(&q, &q, &q, scale)
                }
            }),
        );
        let fuser = GatedSelfAttentionDense::new(vb.pp("fuser"), c, cross, heads, dh)?;
        push(
            "  fuser (gated self-attention + FF)",
            n_tf,
            measure(dev, &key("fuser"), dn, w, r, || {
                fuser.forward(&tokens, &grounding)
            }),
        );
        let attn2 = Attention::new(vb.pp("attn2"), c, Some(cross), heads, dh)?;
        push(
            "  cross-attention (attn2)",
            n_tf,
            measure(dev, &key("attn2"), dn, w, r, || {
                attn2.forward(&tokens, Some(&context))
            }),
        );
        let ff = FeedForward::new(vb.pp("ff"), c)?;
        push(
            "  feed-forward (GEGLU)",
            n_tf,
            measure(dev, &key("ff"), dn, w, r, || ff.forward(&tokens)),
        );
        let proj = conv2d(c, c, 1, Default::default(), vb.pp("proj"))?;
        push(
            "  proj_in / proj_out (conv1×1)",
            2 * n_tf,
            measure(dev, &key("proj"), dn, w, r, || proj.forward(&map)),
        );
        push(
            "  tokens ↔ map permute + contiguous",
            n_tf,
            measure(dev, &key("permute"), dn, w, r, || {
                map.permute((0, 2, 3, 1))?
                    .reshape((2, n, c))?
                    .contiguous()?
                    .reshape((2, hw, hw, c))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()
            }),
        );
    }
    Ok(parts)
}

pub(super) fn run_breakdown(
    args: &BenchArgs,
    dev: &Device,
    dtypes: &[DType],
    threads: usize,
) -> Result<()> {
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    println!();
    println!("glichen bench --breakdown: the UNet's parts at {0}×{0} px, CFG batch 2, random weights, `{command_line}`", args.size);
    println!(
        "machine: {}; device: {}; threads: {threads}; warm-up {}, median of {} runs",
        cpu_model(),
        args.device,
        args.warmup,
        args.runs
    );
    println!("(indented parts are inside the row above them; `calls` is how often one UNet step runs the part)");
    for &dt in dtypes {
        let parts = breakdown_parts(args, dev, dt)?;
        println!();
        println!(
            "| {} | part | per call | calls | per step |",
            dtype_name(dt)
        );
        println!("|---|---|---:|---:|---:|");
        let mut top = 0.0;
        for p in &parts {
            let per_step = p.result.median_s.map(|m| m * p.calls as f64);
            if !p.name.starts_with(' ') {
                top += per_step.unwrap_or(0.0);
            }
            println!(
                "| {} | {} | {} | {} | {} |",
                p.level,
                p.name,
                cell(Some(&p.result)),
                p.calls,
                per_step.map(fmt_secs).unwrap_or_else(|| "–".into())
            );
        }
        println!();
        println!("sum of the top-level parts ≈ {} per UNet step (the rest: conv_in/out, down/upsamplers, skips)", fmt_secs(top));
    }
    Ok(())
}
