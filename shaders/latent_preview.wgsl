// Latent → RGB preview for Stable Diffusion 1.x latents, run on the window's wgpu device.
//
// The four latent channels of one cell arrive as one texel of an Rgba32Float texture
// (r = channel 0, …, a = channel 3), one texel per latent cell. Each output pixel is the linear
// projection ComfyUI uses, mapped from [-1, 1] to [0, 1]. The factors are not repeated here: they
// arrive in `params` from `LATENT_RGB_FACTORS` (src/pipeline/preview.rs), whose CPU projection
// `latents_to_rgb` is the fallback and the reference (tests/studio.rs compares the two).

struct Params {
    // Rows are latent channels 0..3; xyz = R, G, B factors (w unused, for alignment).
    factors: array<vec4<f32>, 4>,
    // Latent width and height in cells.
    size: vec2<u32>,
    _pad: vec2<u32>,
};

@group(0) @binding(0) var latents: texture_2d<f32>;
@group(0) @binding(1) var<uniform> params: Params;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
};

// One triangle that covers the whole target.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let uv = vec2<f32>(f32((index << 1u) & 2u), f32(index & 2u));
    var out: VertexOut;
    out.position = vec4<f32>(uv * 2.0 - 1.0, 0.0, 1.0);
    return out;
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    // The target has one pixel per latent cell, so the fragment's pixel is the cell.
    let cell = min(vec2<u32>(in.position.xy), params.size - vec2<u32>(1u, 1u));
    let v = textureLoad(latents, vec2<i32>(cell), 0);
    let rgb = v.x * params.factors[0].xyz
        + v.y * params.factors[1].xyz
        + v.z * params.factors[2].xyz
        + v.w * params.factors[3].xyz;
    return vec4<f32>(clamp((rgb + 1.0) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0)), 1.0);
}
