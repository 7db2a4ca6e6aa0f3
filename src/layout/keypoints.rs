//! The COCO person that keypoint checkpoints ground: the 17 keypoint names in the model's order,
//! the skeleton that joins them, and the pose geometry the editor needs (a standing person, where a
//! hidden joint would be, moving a person without leaving the canvas). Coordinates are normalised
//! like every layout coordinate; `None` is a joint left out.

/// Number of keypoints per person; GLIGEN's keypoint checkpoint was trained
/// on COCO person keypoints and has no notion of any other skeleton.
pub const KEYPOINTS_PER_PERSON: usize = 17;

/// COCO person keypoint order. The position in this list *is* the keypoint's
/// identity for the model, so entities store points in exactly this order.
pub const COCO_KEYPOINT_NAMES: [&str; KEYPOINTS_PER_PERSON] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// The COCO person skeleton: pairs of joint indices joined by a bone (as in the COCO keypoint
/// annotations' `skeleton`, 0-based).
pub const COCO_SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

/// A person standing and facing the viewer, in units of the person's height, centred on the
/// middle of the body (x to the right, y down). The person's left is on the picture's right.
const STANDING: [[f64; 2]; KEYPOINTS_PER_PERSON] = [
    [0.0, -0.40],    // nose
    [0.025, -0.42],  // left eye
    [-0.025, -0.42], // right eye
    [0.05, -0.41],   // left ear
    [-0.05, -0.41],  // right ear
    [0.11, -0.29],   // left shoulder
    [-0.11, -0.29],  // right shoulder
    [0.14, -0.13],   // left elbow
    [-0.14, -0.13],  // right elbow
    [0.15, 0.01],    // left wrist
    [-0.15, 0.01],   // right wrist
    [0.07, 0.02],    // left hip
    [-0.07, 0.02],   // right hip
    [0.075, 0.24],   // left knee
    [-0.075, 0.24],  // right knee
    [0.08, 0.45],    // left ankle
    [-0.08, 0.45],   // right ankle
];

/// How tall a new person is, as a fraction of the canvas height.
const PERSON_HEIGHT: f64 = 0.6;

/// Whether joint `k` is on the person's left side (drawn lighter than the right).
pub fn is_left_joint(k: usize) -> bool {
    COCO_KEYPOINT_NAMES
        .get(k)
        .is_some_and(|n| n.starts_with("left"))
}

/// "left wrist" for `left_wrist`.
pub fn joint_label(k: usize) -> String {
    COCO_KEYPOINT_NAMES
        .get(k)
        .map(|n| n.replace('_', " "))
        .unwrap_or_else(|| format!("point {k}"))
}

/// A standing person centred at `center` (normalised) on a `width × height` canvas, moved inside
/// the canvas where it would stick out.
pub fn default_person(center: [f64; 2], width: u32, height: u32) -> Vec<Option<[f64; 2]>> {
    let aspect = height.max(1) as f64 / width.max(1) as f64;
    let points: Vec<[f64; 2]> = STANDING
        .iter()
        .map(|d| {
            [
                center[0] + d[0] * PERSON_HEIGHT * aspect,
                center[1] + d[1] * PERSON_HEIGHT,
            ]
        })
        .collect();
    let mut points: Vec<Option<[f64; 2]>> = points.into_iter().map(Some).collect();
    let (dx, dy) = inside_offset(&points, 0.0, 0.0);
    offset_points(&mut points, dx, dy);
    points
}

/// The bounding box `[x0, y0, x1, y1]` of the placed points.
pub fn points_bbox(points: &[Option<[f64; 2]>]) -> Option<[f64; 4]> {
    let mut it = points.iter().flatten();
    let first = it.next()?;
    let mut b = [first[0], first[1], first[0], first[1]];
    for p in it {
        b[0] = b[0].min(p[0]);
        b[1] = b[1].min(p[1]);
        b[2] = b[2].max(p[0]);
        b[3] = b[3].max(p[1]);
    }
    Some(b)
}

/// `(dx, dy)` changed as little as possible so that the placed points moved by it stay in [0, 1]².
pub fn inside_offset(points: &[Option<[f64; 2]>], dx: f64, dy: f64) -> (f64, f64) {
    let Some(b) = points_bbox(points) else {
        return (dx, dy);
    };
    let fit = |d: f64, lo: f64, hi: f64| {
        if hi - lo > 1.0 {
            // Wider than the canvas: keep the middle in the middle.
            0.5 - (lo + hi) / 2.0
        } else {
            d.clamp(-lo, 1.0 - hi)
        }
    };
    (fit(dx, b[0], b[2]), fit(dy, b[1], b[3]))
}

/// Moves the placed points by `(dx, dy)` (normalised); hidden joints stay hidden.
pub fn offset_points(points: &mut [Option<[f64; 2]>], dx: f64, dy: f64) {
    for p in points.iter_mut().flatten() {
        p[0] += dx;
        p[1] += dy;
    }
}

/// Where a hidden joint goes when it is shown again: the standing pose fitted (shift and scale,
/// in pixels) to the joints that are placed.
pub fn estimate_joint(
    points: &[Option<[f64; 2]>],
    joint: usize,
    width: u32,
    height: u32,
) -> [f64; 2] {
    let (w, h) = (width.max(1) as f64, height.max(1) as f64);
    let placed: Vec<(usize, [f64; 2])> = points
        .iter()
        .enumerate()
        .take(KEYPOINTS_PER_PERSON)
        .filter_map(|(k, p)| p.map(|p| (k, [p[0] * w, p[1] * h])))
        .collect();
    let Some(target) = STANDING.get(joint) else {
        return [0.5, 0.5];
    };
    if placed.is_empty() {
        return default_person([0.5, 0.5], width, height)[joint].unwrap_or([0.5, 0.5]);
    }
    let n = placed.len() as f64;
    let cp = placed
        .iter()
        .fold([0.0, 0.0], |a, (_, p)| [a[0] + p[0] / n, a[1] + p[1] / n]);
    let cd = placed.iter().fold([0.0, 0.0], |a, (k, _)| {
        [a[0] + STANDING[*k][0] / n, a[1] + STANDING[*k][1] / n]
    });
    let spread = |pts: &mut dyn Iterator<Item = [f64; 2]>, c: [f64; 2]| {
        pts.map(|p| (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2))
            .sum::<f64>()
    };
    let sp = spread(&mut placed.iter().map(|(_, p)| *p), cp);
    let sd = spread(&mut placed.iter().map(|(k, _)| STANDING[*k]), cd);
    let scale = if placed.len() >= 2 && sd > 1e-12 && sp > 1e-12 {
        (sp / sd).sqrt()
    } else {
        PERSON_HEIGHT * h
    };
    let x = (cp[0] + scale * (target[0] - cd[0])) / w;
    let y = (cp[1] + scale * (target[1] - cd[1])) / h;
    [x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_person_stands_inside_the_canvas() {
        let p = default_person([0.5, 0.5], 512, 512);
        assert_eq!(p.len(), KEYPOINTS_PER_PERSON);
        let b = points_bbox(&p).unwrap();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 1.0 && b[3] <= 1.0);
        // Head above the ankles, the person's left on the right.
        assert!(p[0].unwrap()[1] < p[15].unwrap()[1]);
        assert!(p[5].unwrap()[0] > p[6].unwrap()[0]);
        // Near an edge it is moved in.
        let q = default_person([0.99, 0.01], 768, 512);
        let b = points_bbox(&q).unwrap();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 1.0 + 1e-12 && b[3] <= 1.0 + 1e-12);
    }

    #[test]
    fn a_shown_joint_returns_near_where_it_was() {
        let p = default_person([0.4, 0.5], 512, 512);
        let mut hidden = p.clone();
        hidden[9] = None;
        let est = estimate_joint(&hidden, 9, 512, 512);
        let was = p[9].unwrap();
        assert!((est[0] - was[0]).abs() < 1e-6 && (est[1] - was[1]).abs() < 1e-6);
    }
}
