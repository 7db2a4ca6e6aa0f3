//! The classes of GLIGEN's sem checkpoint: ADE20K SceneParsing (`ADEChallengeData2016`), whose
//! annotation PNGs hold one class index per pixel, as the checkpoint reads them
//! (`gligen_inference.py` `prepare_batch_sem`: `convert("L")`, then a one-hot over 152 channels;
//! its sample `sem_ade_living_room.png` is such a raw annotation).
//!
//! Index convention (ADE20K's, kept by GLIGEN): 0 = "other" (objects outside the 150 classes and
//! unannotated pixels), 1..=150 = the classes of `objectInfo150` in its order (1 wall, 2 building,
//! 3 sky, …). The checkpoint's 152nd channel (index 151) never occurs in ADE20K, so it was never
//! trained; [`class_name`] has no name for it.
//!
//! Colours: the standard ADE20K palette (CSAIL `color150.mat`, the same list as mmsegmentation's
//! and transformers' `ade_palette()`), entry k for class k + 1; "other" is shown black, which no
//! class uses. The palette gives road (7) and skyscraper (49) the same grey (140, 140, 140):
//! [`colour_to_classes`] reads it as road, the first and far more frequent of the two.
//! Names: each entry lists `objectInfo150`'s synonyms; the first is the class name (as in
//! mmsegmentation). The table was checked against CSAIL's `color150.mat` and
//! `object150_info.csv`.

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::{check_size, MapError};

/// Named classes (indices 1..=150).
pub const CLASS_COUNT: u8 = 150;
/// ADE20K's "other": pixels of no listed class.
pub const OTHER: u8 = 0;
/// One-hot channels the sem checkpoint takes (0..=151); the last is never used by ADE20K.
pub const CHECKPOINT_CHANNELS: usize = 152;
/// How "other" (and anything without a colour) is shown.
pub const OTHER_COLOUR: [u8; 3] = [0, 0, 0];

struct Class {
    /// `objectInfo150`'s synonyms, the class name first.
    names: &'static str,
    colour: [u8; 3],
}

const fn c(names: &'static str, colour: [u8; 3]) -> Class {
    Class { names, colour }
}

/// Classes 1..=150 in order (entry k is class k + 1).
#[rustfmt::skip]
const CLASSES: [Class; CLASS_COUNT as usize] = [
    c("wall", [120, 120, 120]), // 1
    c("building, edifice", [180, 120, 120]), // 2
    c("sky", [6, 230, 230]), // 3
    c("floor, flooring", [80, 50, 50]), // 4
    c("tree", [4, 200, 3]), // 5
    c("ceiling", [120, 120, 80]), // 6
    c("road, route", [140, 140, 140]), // 7
    c("bed", [204, 5, 255]), // 8
    c("windowpane, window", [230, 230, 230]), // 9
    c("grass", [4, 250, 7]), // 10
    c("cabinet", [224, 5, 255]), // 11
    c("sidewalk, pavement", [235, 255, 7]), // 12
    c("person, individual, someone, somebody, mortal, soul", [150, 5, 61]), // 13
    c("earth, ground", [120, 120, 70]), // 14
    c("door, double door", [8, 255, 51]), // 15
    c("table", [255, 6, 82]), // 16
    c("mountain, mount", [143, 255, 140]), // 17
    c("plant, flora, plant life", [204, 255, 4]), // 18
    c("curtain, drape, drapery, mantle, pall", [255, 51, 7]), // 19
    c("chair", [204, 70, 3]), // 20
    c("car, auto, automobile, machine, motorcar", [0, 102, 200]), // 21
    c("water", [61, 230, 250]), // 22
    c("painting, picture", [255, 6, 51]), // 23
    c("sofa, couch, lounge", [11, 102, 255]), // 24
    c("shelf", [255, 7, 71]), // 25
    c("house", [255, 9, 224]), // 26
    c("sea", [9, 7, 230]), // 27
    c("mirror", [220, 220, 220]), // 28
    c("rug, carpet, carpeting", [255, 9, 92]), // 29
    c("field", [112, 9, 255]), // 30
    c("armchair", [8, 255, 214]), // 31
    c("seat", [7, 255, 224]), // 32
    c("fence, fencing", [255, 184, 6]), // 33
    c("desk", [10, 255, 71]), // 34
    c("rock, stone", [255, 41, 10]), // 35
    c("wardrobe, closet, press", [7, 255, 255]), // 36
    c("lamp", [224, 255, 8]), // 37
    c("bathtub, bathing tub, bath, tub", [102, 8, 255]), // 38
    c("railing, rail", [255, 61, 6]), // 39
    c("cushion", [255, 194, 7]), // 40
    c("base, pedestal, stand", [255, 122, 8]), // 41
    c("box", [0, 255, 20]), // 42
    c("column, pillar", [255, 8, 41]), // 43
    c("signboard, sign", [255, 5, 153]), // 44
    c("chest of drawers, chest, bureau, dresser", [6, 51, 255]), // 45
    c("counter", [235, 12, 255]), // 46
    c("sand", [160, 150, 20]), // 47
    c("sink", [0, 163, 255]), // 48
    c("skyscraper", [140, 140, 140]), // 49
    c("fireplace, hearth, open fireplace", [250, 10, 15]), // 50
    c("refrigerator, icebox", [20, 255, 0]), // 51
    c("grandstand, covered stand", [31, 255, 0]), // 52
    c("path", [255, 31, 0]), // 53
    c("stairs, steps", [255, 224, 0]), // 54
    c("runway", [153, 255, 0]), // 55
    c("case, display case, showcase, vitrine", [0, 0, 255]), // 56
    c("pool table, billiard table, snooker table", [255, 71, 0]), // 57
    c("pillow", [0, 235, 255]), // 58
    c("screen door, screen", [0, 173, 255]), // 59
    c("stairway, staircase", [31, 0, 255]), // 60
    c("river", [11, 200, 200]), // 61
    c("bridge, span", [255, 82, 0]), // 62
    c("bookcase", [0, 255, 245]), // 63
    c("blind, screen", [0, 61, 255]), // 64
    c("coffee table, cocktail table", [0, 255, 112]), // 65
    c("toilet, can, commode, crapper, pot, potty, stool, throne", [0, 255, 133]), // 66
    c("flower", [255, 0, 0]), // 67
    c("book", [255, 163, 0]), // 68
    c("hill", [255, 102, 0]), // 69
    c("bench", [194, 255, 0]), // 70
    c("countertop", [0, 143, 255]), // 71
    c("stove, kitchen stove, range, kitchen range, cooking stove", [51, 255, 0]), // 72
    c("palm, palm tree", [0, 82, 255]), // 73
    c("kitchen island", [0, 255, 41]), // 74
    c("computer, computing machine, computing device, data processor, electronic computer, information processing system", [0, 255, 173]), // 75
    c("swivel chair", [10, 0, 255]), // 76
    c("boat", [173, 255, 0]), // 77
    c("bar", [0, 255, 153]), // 78
    c("arcade machine", [255, 92, 0]), // 79
    c("hovel, hut, hutch, shack, shanty", [255, 0, 255]), // 80
    c("bus, autobus, coach, charabanc, double-decker, jitney, motorbus, motorcoach, omnibus, passenger vehicle", [255, 0, 245]), // 81
    c("towel", [255, 0, 102]), // 82
    c("light, light source", [255, 173, 0]), // 83
    c("truck, motortruck", [255, 0, 20]), // 84
    c("tower", [255, 184, 184]), // 85
    c("chandelier, pendant, pendent", [0, 31, 255]), // 86
    c("awning, sunshade, sunblind", [0, 255, 61]), // 87
    c("streetlight, street lamp", [0, 71, 255]), // 88
    c("booth, cubicle, stall, kiosk", [255, 0, 204]), // 89
    c("television receiver, television, television set, tv, tv set, idiot box, boob tube, telly, goggle box", [0, 255, 194]), // 90
    c("airplane, aeroplane, plane", [0, 255, 82]), // 91
    c("dirt track", [0, 10, 255]), // 92
    c("apparel, wearing apparel, dress, clothes", [0, 112, 255]), // 93
    c("pole", [51, 0, 255]), // 94
    c("land, ground, soil", [0, 194, 255]), // 95
    c("bannister, banister, balustrade, balusters, handrail", [0, 122, 255]), // 96
    c("escalator, moving staircase, moving stairway", [0, 255, 163]), // 97
    c("ottoman, pouf, pouffe, puff, hassock", [255, 153, 0]), // 98
    c("bottle", [0, 255, 10]), // 99
    c("buffet, counter, sideboard", [255, 112, 0]), // 100
    c("poster, posting, placard, notice, bill, card", [143, 255, 0]), // 101
    c("stage", [82, 0, 255]), // 102
    c("van", [163, 255, 0]), // 103
    c("ship", [255, 235, 0]), // 104
    c("fountain", [8, 184, 170]), // 105
    c("conveyer belt, conveyor belt, conveyer, conveyor, transporter", [133, 0, 255]), // 106
    c("canopy", [0, 255, 92]), // 107
    c("washer, automatic washer, washing machine", [184, 0, 255]), // 108
    c("plaything, toy", [255, 0, 31]), // 109
    c("swimming pool, swimming bath, natatorium", [0, 184, 255]), // 110
    c("stool", [0, 214, 255]), // 111
    c("barrel, cask", [255, 0, 112]), // 112
    c("basket, handbasket", [92, 255, 0]), // 113
    c("waterfall, falls", [0, 224, 255]), // 114
    c("tent, collapsible shelter", [112, 224, 255]), // 115
    c("bag", [70, 184, 160]), // 116
    c("minibike, motorbike", [163, 0, 255]), // 117
    c("cradle", [153, 0, 255]), // 118
    c("oven", [71, 255, 0]), // 119
    c("ball", [255, 0, 163]), // 120
    c("food, solid food", [255, 204, 0]), // 121
    c("step, stair", [255, 0, 143]), // 122
    c("tank, storage tank", [0, 255, 235]), // 123
    c("trade name, brand name, brand, marque", [133, 255, 0]), // 124
    c("microwave, microwave oven", [255, 0, 235]), // 125
    c("pot, flowerpot", [245, 0, 255]), // 126
    c("animal, animate being, beast, brute, creature, fauna", [255, 0, 122]), // 127
    c("bicycle, bike, wheel, cycle", [255, 245, 0]), // 128
    c("lake", [10, 190, 212]), // 129
    c("dishwasher, dish washer, dishwashing machine", [214, 255, 0]), // 130
    c("screen, silver screen, projection screen", [0, 204, 255]), // 131
    c("blanket, cover", [20, 0, 255]), // 132
    c("sculpture", [255, 255, 0]), // 133
    c("hood, exhaust hood", [0, 153, 255]), // 134
    c("sconce", [0, 41, 255]), // 135
    c("vase", [0, 255, 204]), // 136
    c("traffic light, traffic signal, stoplight", [41, 0, 255]), // 137
    c("tray", [41, 255, 0]), // 138
    c("ashcan, trash can, garbage can, wastebin, ash bin, ash-bin, ashbin, dustbin, trash barrel, trash bin", [173, 0, 255]), // 139
    c("fan", [0, 245, 255]), // 140
    c("pier, wharf, wharfage, dock", [71, 0, 255]), // 141
    c("crt screen", [122, 0, 255]), // 142
    c("plate", [0, 255, 184]), // 143
    c("monitor, monitoring device", [0, 92, 255]), // 144
    c("bulletin board, notice board", [184, 255, 0]), // 145
    c("shower", [0, 133, 255]), // 146
    c("radiator", [255, 214, 0]), // 147
    c("glass, drinking glass", [25, 194, 194]), // 148
    c("clock", [102, 255, 0]), // 149
    c("flag", [92, 0, 255]), // 150
];

fn class(index: u8) -> Option<&'static Class> {
    CLASSES.get(usize::from(index).checked_sub(1)?)
}

/// The class name: "other" for 0, `objectInfo150`'s first name for 1..=150 ("wall", "sky", …),
/// `None` for 151..=255.
pub fn class_name(index: u8) -> Option<&'static str> {
    if index == OTHER {
        return Some("other");
    }
    class(index).and_then(|c| c.names.split(',').next())
}

/// Every name of a class (the first is [`class_name`]'s): "person", "individual", "someone", …
pub fn class_synonyms(index: u8) -> Vec<&'static str> {
    match class(index) {
        Some(c) => c.names.split(',').map(str::trim).collect(),
        None if index == OTHER => vec!["other"],
        None => Vec::new(),
    }
}

/// The palette colour of a class; [`OTHER_COLOUR`] (black) for 0 and for indices without a
/// class (151..=255), which is only for display.
pub fn class_colour(index: u8) -> [u8; 3] {
    class(index).map_or(OTHER_COLOUR, |c| c.colour)
}

/// The class called `name` (any case, surrounding spaces ignored). Class names win over
/// synonyms ("screen" is class 131, not screen door's synonym); a synonym shared by several
/// classes gives the first ("ground" → earth, 14). "other" is 0.
pub fn class_by_name(name: &str) -> Option<u8> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("other") {
        return Some(OTHER);
    }
    let index = |i: usize| u8::try_from(i + 1).ok();
    let first = CLASSES.iter().position(|c| {
        c.names
            .split(',')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    });
    if let Some(i) = first {
        return index(i);
    }
    CLASSES
        .iter()
        .position(|c| {
            c.names
                .split(',')
                .any(|n| n.trim().eq_ignore_ascii_case(name))
        })
        .and_then(index)
}

/// The class of a palette colour: 0 for black, the class for a palette colour (road for the
/// shared grey), `None` for any other colour.
pub fn class_of_colour(rgb: [u8; 3]) -> Option<u8> {
    if rgb == OTHER_COLOUR {
        return Some(OTHER);
    }
    let i = CLASSES.iter().position(|c| c.colour == rgb)?;
    u8::try_from(i + 1).ok()
}

/// A segmentation drawn in the ADE20K palette (black = other) to the class-index picture the
/// sem checkpoint reads. A colour outside the palette is an error naming the first such pixel
/// (row by row), since a guessed nearest class would silently change the layout; a picture
/// that was resized with smoothing has such colours on every border.
pub fn colour_to_classes(rgb: &RgbImage) -> Result<GrayImage, MapError> {
    check_size("segmentation", rgb.width(), rgb.height())?;
    // A small cache: segmentations have few colours, so most pixels repeat the previous one.
    let mut last: Option<([u8; 3], u8)> = None;
    let mut out = GrayImage::new(rgb.width(), rgb.height());
    for (x, y, p) in rgb.enumerate_pixels() {
        let class = match last {
            Some((colour, class)) if colour == p.0 => class,
            _ => {
                let class =
                    class_of_colour(p.0).ok_or(MapError::NotInPalette { x, y, rgb: p.0 })?;
                last = Some((p.0, class));
                class
            }
        };
        out.put_pixel(x, y, Luma([class]));
    }
    Ok(out)
}

/// A class-index picture in the ADE20K palette, for display (0 and 151..=255 black).
pub fn classes_to_colour(gray: &GrayImage) -> RgbImage {
    RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
        Rgb(class_colour(gray.get_pixel(x, y).0[0]))
    })
}
