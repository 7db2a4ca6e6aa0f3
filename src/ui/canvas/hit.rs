//! Hit testing: what is under a screen point, from the document and the canvas transform alone.
//! Later entities are drawn on top, so they are hit first; the selection wins over the rest.

use super::{CanvasTransform, Handle, HANDLE_REACH};
use crate::layout::keypoints::COCO_SKELETON;
use crate::layout::{Entity, Layout};
use crate::ui::document::Document;
use egui::{pos2, vec2, Pos2, Rect};

/// Radius within which a bone catches the pointer, in points.
const BONE_REACH: f32 = 6.0;
/// Padding around a person's joints that still counts as the person, in points.
pub(super) const PERSON_PAD: f32 = 10.0;

fn contains(b: [f64; 4], p: Pos2) -> bool {
    let (x, y) = (p.x as f64, p.y as f64);
    x >= b[0].min(b[2]) && x <= b[0].max(b[2]) && y >= b[1].min(b[3]) && y <= b[1].max(b[3])
}

/// Distance from `p` to the segment `a`–`b`.
fn segment_distance(p: Pos2, a: Pos2, b: Pos2) -> f32 {
    let ab = b - a;
    let len2 = ab.length_sq();
    if len2 <= f32::EPSILON {
        return p.distance(a);
    }
    let t = ((p - a).dot(ab) / len2).clamp(0.0, 1.0);
    p.distance(a + ab * t)
}

/// Joint screen positions of person `i` (`None` where hidden).
pub(super) fn joint_positions(
    layout: &Layout,
    tf: &CanvasTransform,
    i: usize,
) -> Vec<Option<Pos2>> {
    match layout.entities.get(i) {
        Some(Entity::Keypoints { points }) => points
            .iter()
            .map(|p| p.map(|p| tf.screen_from_layout(pos2(p[0] as f32, p[1] as f32))))
            .collect(),
        _ => Vec::new(),
    }
}

/// The joint nearest `screen` within reach: the selected person's first, then the topmost.
/// `any`: every person, else only the selected one.
pub(super) fn joint_at(
    doc: &Document,
    tf: &CanvasTransform,
    screen: Pos2,
    any: bool,
) -> Option<(usize, usize)> {
    let layout = doc.layout();
    let n = layout.entities.len();
    let order = doc
        .selection
        .into_iter()
        .chain((0..n).rev().filter(|_| any));
    for i in order {
        let best = joint_positions(layout, tf, i)
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.map(|p| (k, p.distance(screen))))
            .filter(|(_, d)| *d <= HANDLE_REACH)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((k, _)) = best {
            return Some((i, k));
        }
    }
    None
}

/// Whether `screen` is on entity `i`: inside a box, or on a person (a joint, a bone, or inside
/// the joints' padded bounding box).
pub(super) fn entity_hit(layout: &Layout, tf: &CanvasTransform, i: usize, screen: Pos2) -> bool {
    match layout.entities.get(i) {
        Some(Entity::Keypoints { .. }) => {
            let joints = joint_positions(layout, tf, i);
            let placed: Vec<Pos2> = joints.iter().flatten().copied().collect();
            if placed.is_empty() {
                return false;
            }
            let on_bone = COCO_SKELETON.iter().any(|&(a, b)| {
                match (
                    joints.get(a).copied().flatten(),
                    joints.get(b).copied().flatten(),
                ) {
                    (Some(a), Some(b)) => segment_distance(screen, a, b) <= BONE_REACH,
                    _ => false,
                }
            });
            on_bone
                || placed.iter().any(|p| p.distance(screen) <= HANDLE_REACH)
                || Rect::from_points(&placed)
                    .expand(PERSON_PAD)
                    .contains(screen)
        }
        Some(e) => e
            .bbox()
            .is_some_and(|b| contains(b, tf.layout_from_screen(screen))),
        None => false,
    }
}

/// The topmost entity under `screen`; later entities are on top.
pub(super) fn entity_at(layout: &Layout, tf: &CanvasTransform, screen: Pos2) -> Option<usize> {
    (0..layout.entities.len())
        .rev()
        .find(|&i| entity_hit(layout, tf, i, screen))
}

/// The resize handle of the selected box under `screen`.
pub(super) fn handle_at(
    doc: &Document,
    tf: &CanvasTransform,
    screen: Pos2,
) -> Option<(usize, Handle)> {
    let i = doc.selection?;
    let b = doc.layout().entities.get(i)?.bbox()?;
    let r = tf.screen_rect_from_box(b);
    Handle::ALL
        .iter()
        .copied()
        .find(|h| h.pos(r).distance(screen) <= HANDLE_REACH)
        .map(|h| (i, h))
}

/// Where the style image's badge is drawn (the canvas's top-right corner).
pub(super) fn style_badge_rect(tf: &CanvasTransform) -> Rect {
    let side = (tf.rect.width().min(tf.rect.height()) * 0.18).clamp(28.0, 72.0);
    Rect::from_min_size(
        tf.rect.right_top() + vec2(-side - 6.0, 6.0),
        vec2(side, side),
    )
}

/// The style image the badge shows (the first, if a file has several).
pub(super) fn style_index(layout: &Layout) -> Option<usize> {
    layout
        .entities
        .iter()
        .position(|e| matches!(e, Entity::StyleImage { .. }))
}
