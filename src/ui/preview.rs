//! Per-step previews: raw latents from the worker → an RGB texture egui can show.
//!
//! With a wgpu render state (the real window, or a kittest harness with the wgpu renderer) the
//! projection runs in `shaders/latent_preview.wgsl` on the window's device: the latents are
//! uploaded as one Rgba32Float texel per latent cell, a full-target triangle writes an Rgba8Unorm
//! texture of the same size, and that texture is registered with egui-wgpu as a user texture.
//! Without one (e.g. headless tests without a GPU) the CPU projection
//! [`crate::pipeline::preview::latents_to_rgb`] fills an egui texture instead.

use crate::pipeline::preview::LATENT_RGB_FACTORS;
use crate::worker::LatentFrame;
use eframe::egui_wgpu::{self, wgpu};
use std::num::NonZeroU64;

/// WGSL source of the latent→RGB projection.
pub const LATENT_PREVIEW_WGSL: &str = include_str!("../../shaders/latent_preview.wgsl");

/// Matches `Params` in the shader.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    factors: [[f32; 4]; 4],
    size: [u32; 2],
    _pad: [u32; 2],
}

/// The sized resources of one preview resolution.
struct Target {
    width: u32,
    height: u32,
    input: wgpu::Texture,
    output: wgpu::Texture,
    bind_group: wgpu::BindGroup,
    texture_id: egui::TextureId,
}

/// Runs the WGSL latent preview on the window's wgpu device.
pub struct GpuPreview {
    render_state: egui_wgpu::RenderState,
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    params: wgpu::Buffer,
    target: Option<Target>,
    /// Previews rendered so far (for diagnostics and tests).
    pub frames: u64,
}

impl GpuPreview {
    pub fn new(render_state: &egui_wgpu::RenderState) -> Self {
        let device = &render_state.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("glichen latent preview"),
            source: wgpu::ShaderSource::Wgsl(LATENT_PREVIEW_WGSL.into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("glichen latent preview"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        multisampled: false,
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(size_of::<Params>() as u64),
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("glichen latent preview"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("glichen latent preview"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: wgpu::TextureFormat::Rgba8Unorm,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("glichen latent preview params"),
            size: size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self {
            render_state: render_state.clone(),
            pipeline,
            layout,
            params,
            target: None,
            frames: 0,
        }
    }

    fn ensure_target(&mut self, width: u32, height: u32) {
        if self
            .target
            .as_ref()
            .is_some_and(|t| t.width == width && t.height == height)
        {
            return;
        }
        let device = &self.render_state.device;
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        let input = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("glichen latents"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let output = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("glichen latent preview"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT
                | wgpu::TextureUsages::TEXTURE_BINDING
                | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let input_view = input.create_view(&wgpu::TextureViewDescriptor::default());
        let output_view = output.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("glichen latent preview"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&input_view),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: self.params.as_entire_binding(),
                },
            ],
        });
        let mut renderer = self.render_state.renderer.write();
        let texture_id = match self.target.take() {
            Some(old) => {
                renderer.update_egui_texture_from_wgpu_texture(
                    device,
                    &output_view,
                    wgpu::FilterMode::Linear,
                    old.texture_id,
                );
                old.texture_id
            }
            None => {
                renderer.register_native_texture(device, &output_view, wgpu::FilterMode::Linear)
            }
        };
        drop(renderer);
        self.target = Some(Target {
            width,
            height,
            input,
            output,
            bind_group,
            texture_id,
        });
    }

    /// Projects `frame` to RGB on the GPU; returns the egui texture showing it and its size in
    /// pixels (one per latent cell).
    pub fn render(&mut self, frame: &LatentFrame) -> Option<(egui::TextureId, [usize; 2])> {
        if frame.channels < 4 || frame.width == 0 || frame.height == 0 {
            return None;
        }
        let (w, h) = (frame.width as u32, frame.height as u32);
        self.ensure_target(w, h);
        let target = self.target.as_ref()?;
        let queue = &self.render_state.queue;
        let mut factors = [[0f32; 4]; 4];
        for (row, f) in factors.iter_mut().zip(LATENT_RGB_FACTORS.iter()) {
            row[..3].copy_from_slice(f);
        }
        let params = Params {
            factors,
            size: [w, h],
            _pad: [0; 2],
        };
        queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        // Channel-major planes → one RGBA texel per cell.
        let plane = frame.width * frame.height;
        let mut texels = vec![0f32; plane * 4];
        for i in 0..plane {
            for c in 0..4 {
                texels[i * 4 + c] = frame.data[c * plane + i];
            }
        }
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &target.input,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            bytemuck::cast_slice(&texels),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(16 * w),
                rows_per_image: Some(h),
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
        let device = &self.render_state.device;
        let view = target
            .output
            .create_view(&wgpu::TextureViewDescriptor::default());
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("glichen latent preview"),
        });
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("glichen latent preview"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                    depth_slice: None,
                })],
                ..Default::default()
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &target.bind_group, &[]);
            pass.draw(0..3, 0..1);
        }
        queue.submit(std::iter::once(encoder.finish()));
        self.frames += 1;
        Some((target.texture_id, [frame.width, frame.height]))
    }

    /// Reads the last preview back (tests compare it with the CPU projection). Blocks on the GPU.
    pub fn read_back(&self) -> Option<image::RgbaImage> {
        let target = self.target.as_ref()?;
        let device = &self.render_state.device;
        let queue = &self.render_state.queue;
        let (w, h) = (target.width as usize, target.height as usize);
        let unpadded = w * 4;
        let align = wgpu::COPY_BYTES_PER_ROW_ALIGNMENT as usize;
        let padded = unpadded.div_ceil(align) * align;
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("glichen preview read-back"),
            size: (padded * h) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("glichen preview read-back"),
        });
        encoder.copy_texture_to_buffer(
            target.output.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded as u32),
                    rows_per_image: None,
                },
            },
            wgpu::Extent3d {
                width: target.width,
                height: target.height,
                depth_or_array_layers: 1,
            },
        );
        let index = queue.submit(std::iter::once(encoder.finish()));
        let slice = buffer.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(std::time::Duration::from_secs(10)),
            })
            .ok()?;
        rx.recv().ok()?.ok()?;
        let data = buffer.slice(..).get_mapped_range().ok()?;
        let pixels: Vec<u8> = data
            .chunks_exact(padded)
            .flat_map(|row| row[..unpadded].iter().copied())
            .collect();
        image::RgbaImage::from_raw(target.width, target.height, pixels)
    }
}

/// The preview as egui shows it: a GPU texture, or a CPU-filled one.
pub enum PreviewTexture {
    Gpu {
        id: egui::TextureId,
        size: [usize; 2],
    },
    Cpu(egui::TextureHandle),
}

impl PreviewTexture {
    pub fn id(&self) -> egui::TextureId {
        match self {
            PreviewTexture::Gpu { id, .. } => *id,
            PreviewTexture::Cpu(t) => t.id(),
        }
    }

    pub fn size(&self) -> [usize; 2] {
        match self {
            PreviewTexture::Gpu { size, .. } => *size,
            PreviewTexture::Cpu(t) => t.size(),
        }
    }
}

/// Turns latent frames into a texture with the GPU when it can, else on the CPU.
pub struct PreviewRenderer {
    gpu: Option<GpuPreview>,
    cpu_texture: Option<egui::TextureHandle>,
    /// Previews shown from the worker's TAESD decodes (rather than projected here).
    decoded_shown: usize,
}

impl PreviewRenderer {
    pub fn new(render_state: Option<&egui_wgpu::RenderState>) -> Self {
        Self {
            gpu: render_state.map(GpuPreview::new),
            cpu_texture: None,
            decoded_shown: 0,
        }
    }

    /// Whether previews run through the WGSL shader.
    pub fn uses_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    pub fn gpu(&self) -> Option<&GpuPreview> {
        self.gpu.as_ref()
    }

    /// A step's picture already decoded by the preview decoder (TAESD) in the worker.
    pub fn show_decoded(&mut self, ctx: &egui::Context, rgb: &image::RgbImage) -> PreviewTexture {
        self.decoded_shown += 1;
        self.set_cpu(ctx, rgb)
    }

    /// How many previews came decoded from the worker (TAESD) rather than projected.
    pub fn decoded_shown(&self) -> usize {
        self.decoded_shown
    }

    fn set_cpu(&mut self, ctx: &egui::Context, rgb: &image::RgbImage) -> PreviewTexture {
        let image =
            egui::ColorImage::from_rgb([rgb.width() as usize, rgb.height() as usize], rgb.as_raw());
        match self.cpu_texture.as_mut() {
            Some(t) => t.set(image, egui::TextureOptions::LINEAR),
            None => {
                self.cpu_texture =
                    Some(ctx.load_texture("glichen-preview", image, egui::TextureOptions::LINEAR));
            }
        }
        let texture = self.cpu_texture.clone().unwrap_or_else(|| {
            ctx.load_texture(
                "glichen-preview",
                egui::ColorImage::default(),
                egui::TextureOptions::LINEAR,
            )
        });
        PreviewTexture::Cpu(texture)
    }

    pub fn render(&mut self, ctx: &egui::Context, frame: &LatentFrame) -> Option<PreviewTexture> {
        if let Some(gpu) = self.gpu.as_mut() {
            return gpu
                .render(frame)
                .map(|(id, size)| PreviewTexture::Gpu { id, size });
        }
        let rgb = frame.to_rgb().ok()?;
        Some(self.set_cpu(ctx, &rgb))
    }
}
