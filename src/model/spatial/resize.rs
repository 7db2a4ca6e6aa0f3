//! torch's `F.interpolate` in the two modes the spatial-map networks use, computed in f32 on the CPU
//! exactly as torch's CPU kernels compute them: the same float32 scale and source-index arithmetic,
//! so that the pixels picked and the weights applied are torch's own.

use candle_core::{DType, Device, Result, Tensor};

/// torch's default mode (`mode="nearest"`, the legacy one): source index
/// `min(floor(dst · (in / out)), in − 1)` with the scale in float32; an exact copy at equal size and
/// `dst / 2` at twice the size, as torch special-cases them. Returns the input's dtype and device.
pub fn interpolate_nearest(x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    resample(x, (h, w), |input, out| {
        let idx: Vec<usize> = (0..out).map(|d| nearest_index(d, input, out)).collect();
        Ok(Axis {
            taps: 1,
            index: idx,
            weights: vec![1.0; out],
        })
    })
}

/// `F.interpolate(mode="bicubic", align_corners=False)`: Keys' cubic with A = −0.75, no antialias,
/// no clamping of the result; source positions `(dst + 0.5) · (in / out) − 0.5`, and the four
/// neighbours of a position near the border read the nearest pixel inside (torch's
/// `upsample_bicubic2d`). Returns the input's dtype and device.
pub fn interpolate_bicubic(x: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
    resample(x, (h, w), |input, out| {
        let scale = input as f32 / out as f32;
        let mut index = Vec::with_capacity(4 * out);
        let mut weights = Vec::with_capacity(4 * out);
        for d in 0..out {
            let real = scale * (d as f32 + 0.5) - 0.5;
            // torch floors without clamping below, so a position left of pixel 0 keeps its fraction
            // against pixel −1 (read as pixel 0).
            let base = (real.floor() as i64).min(input as i64 - 1);
            let t = (real - base as f32).clamp(0.0, 1.0);
            for k in 0..4 {
                index.push((base - 1 + k).clamp(0, input as i64 - 1) as usize);
            }
            weights.extend(cubic_weights(t));
        }
        Ok(Axis {
            taps: 4,
            index,
            weights,
        })
    })
}

fn nearest_index(dst: usize, input: usize, out: usize) -> usize {
    if out == input {
        dst
    } else if out == 2 * input {
        dst / 2
    } else {
        let scale = input as f32 / out as f32;
        ((dst as f32 * scale).floor() as usize).min(input - 1)
    }
}

/// torch's `get_cubic_upsample_coefficients`, in its order of operations.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let u = 1.0 - t;
    [far(t + 1.0), near(t), near(u), far(u + 1.0)]
}

/// For each output position along one axis, `taps` source indices and their weights.
struct Axis {
    taps: usize,
    index: Vec<usize>,
    weights: Vec<f32>,
}

/// Separable resampling of `[B, C, H, W]`: each output pixel is `Σ_i wy_i Σ_j wx_j x[y_i, x_j]`,
/// rows first as torch's bicubic kernel sums them.
fn resample(
    x: &Tensor,
    (h, w): (usize, usize),
    axis: impl Fn(usize, usize) -> Result<Axis>,
) -> Result<Tensor> {
    let (b, c, in_h, in_w) = x.dims4()?;
    if h == 0 || w == 0 || in_h == 0 || in_w == 0 {
        candle_core::bail!(
            "cannot resize a {in_w}×{in_h} map to {w}×{h}: both sizes must be non-zero"
        );
    }
    let src = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (ay, ax) = (axis(in_h, h)?, axis(in_w, w)?);
    let mut out = Vec::with_capacity(b * c * h * w);
    for plane in src.chunks_exact(in_h * in_w) {
        for oy in 0..h {
            for ox in 0..w {
                let mut acc = 0f32;
                for i in 0..ay.taps {
                    let row = &plane[ay.index[oy * ay.taps + i] * in_w..][..in_w];
                    let mut line = 0f32;
                    for j in 0..ax.taps {
                        line += ax.weights[ox * ax.taps + j] * row[ax.index[ox * ax.taps + j]];
                    }
                    acc += ay.weights[oy * ay.taps + i] * line;
                }
                out.push(acc);
            }
        }
    }
    Tensor::from_vec(out, (b, c, h, w), &Device::Cpu)?
        .to_dtype(x.dtype())?
        .to_device(x.device())
}

#[cfg(test)]
mod tests {
    //! Expected values from torch 2.15 (`F.interpolate`, CPU, float32) on the input
    //! `(7·i mod 11) − 5` for flat index i.
    use super::*;

    fn input(shape: (usize, usize, usize, usize)) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn nearest_matches_torch_legacy_nearest() {
        let cases: [(_, _, &[f32]); 3] = [
            (
                (1, 1, 3, 5),
                (4, 3),
                &[-5., 2., 5., -5., 2., 5., -3., 4., -4., -1., -5., -2.],
            ),
            (
                (1, 1, 2, 3),
                (4, 6),
                &[
                    -5., -5., 2., 2., -2., -2., -5., -5., 2., 2., -2., -2., 5., 5., 1., 1., -3.,
                    -3., 5., 5., 1., 1., -3., -3.,
                ],
            ),
            (
                (1, 1, 7, 3),
                (5, 3),
                &[
                    -5., 2., -2., 5., 1., -3., 4., 0., -4., 2., -2., 5., 1., -3., 4.,
                ],
            ),
        ];
        for (shape, size, want) in cases {
            let got = interpolate_nearest(&input(shape), size).unwrap();
            assert_eq!(got.dims(), &[shape.0, shape.1, size.0, size.1]);
            assert_eq!(flat(&got), want, "{shape:?} → {size:?}");
        }
    }

    #[rustfmt::skip]
    const BICUBIC_UP: [f32; 35] = [
        -6.3752904, -2.520038, 2.252615, -0.04800058, -2.348613, 2.424039, 6.2792883,
        -2.50448, -1.7161458, -0.5319621, 0.083750576, 0.89327884, 2.5542748, 3.6910565,
        1.3968663, -0.79345995, -3.0944796, 0.50000083, 4.0944796, 1.7934573, -0.39686584,
        -1.8204827, -1.0321467, 0.15203898, 1.4731252, 1.1467822, -1.72197, -3.8954446,
        -5.27929, -1.4240382, 3.348615, 2.1782496, -1.9424118, -4.4279585, -5.876867,
    ];

    #[rustfmt::skip]
    const BICUBIC_DOWN: [f32; 16] = [
        1.5586395, 3.0244446, -3.235382, -1.5067291, -1.9754333, -0.734375, 1.9860992, 3.4900055,
        2.5586395, -3.365509, -2.235382, -2.3572388, -0.8878174, 0.5284729, 1.058548, 4.4900055,
    ];

    #[test]
    fn bicubic_matches_torch_at_borders_up_and_down() {
        let same: Vec<f32> = flat(&input((1, 1, 4, 4)));
        let cases: [(_, _, &[f32]); 3] = [
            ((1, 1, 3, 4), (5, 7), &BICUBIC_UP),
            ((1, 2, 6, 5), (4, 2), &BICUBIC_DOWN),
            ((1, 1, 4, 4), (4, 4), &same),
        ];
        for (shape, size, want) in cases {
            let got = interpolate_bicubic(&input(shape), size).unwrap();
            assert_eq!(got.dims(), &[shape.0, shape.1, size.0, size.1]);
            let worst = flat(&got)
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-5, "{shape:?} → {size:?}: off by {worst}");
        }
    }

    #[test]
    fn keeps_dtype_and_refuses_empty_sizes() {
        let x = input((1, 1, 2, 2)).to_dtype(DType::F16).unwrap();
        assert_eq!(interpolate_bicubic(&x, (3, 3)).unwrap().dtype(), DType::F16);
        assert!(interpolate_nearest(&x, (0, 3)).is_err());
    }
}
