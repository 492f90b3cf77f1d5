"""The figures behind the policy's evidence gates (docs/detection.md), on benign images only:

    python bench/face_gates.py

- adults counted as minors on scikit-image's 100 LFW faces (25 px, enlarged to 128 px on grey) by
  age factor, with and without the size/sharpness/two-finder gates;
- the astronaut's face shrunk (and enlarged back) and blurred: apparent age and sharpness;
- texture of photos and Pillow drawings (the flat-graphic gate);
- benign composites (the colour wheel or an icon beside adult faces the model reads young): labels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from skimage import data

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import Subject
from fediguard.detectors.imagestats import face_sharpness, texture
from fediguard.detectors.nudity import NudityDetector
from fediguard.media.frames import DecodedMedia, Frame
from fediguard.policy import MIN_AGED_FACE_PX, MIN_FACE_SHARPNESS, decide
from fediguard.verdicts import PolicyConfig
from support.benign import beside, colour_wheel, lfw_face, webcam_icon

FACTORS = (0.0, 0.5, 1.0, 2.0)


def subject(image: np.ndarray) -> Subject:
    media = DecodedMedia("image/png", image.shape[1], image.shape[0], [Frame(0, image)])
    return Subject(b"", "x", "image/png", lambda: media)


def lfw(age: AgeDetector) -> None:
    rows = []
    for i in range(100):
        face = lfw_face(i, 128)
        canvas = np.full((256, 256, 3), 128, np.uint8)
        canvas[64:192, 64:192] = face
        found = [f for f in age.faces(canvas) if f.age is not None]
        if found:
            f = max(found, key=lambda f: f.score)
            rows.append((f.age, f.age_sd or 0.0, f.sharpness or 0.0, f.hog_agrees, f.box[2]))
    print(f"LFW: {len(rows)} of 100 faces found and aged (128 px)")
    sharp = np.percentile([r[2] for r in rows], [5, 25, 50, 75, 95]).round(0)
    print(f"  sharpness p5/p25/p50/p75/p95: {sharp.tolist()}")
    gated = [r for r in rows if r[2] >= MIN_FACE_SHARPNESS and r[3] and r[4] >= MIN_AGED_FACE_PX]
    for name, group in (("all", rows), ("passing the gates", gated)):
        counts = [sum(1 for a, sd, *_ in group if a - k * sd < 18) for k in FACTORS]
        text = ", ".join(f"k={k:g}: {c}" for k, c in zip(FACTORS, counts, strict=True))
        print(f"  adults counted as minors (age - k*sd < 18), {name} ({len(group)}): {text}")


def astronaut(age: AgeDetector) -> None:
    image = data.astronaut()
    face = max(age.faces(image), key=lambda f: f.score)
    print(
        f"astronaut: {face.box[2]:.0f} px, {face.age:.0f} ± {face.age_sd:.0f}, sharpness {face.sharpness:.0f}"
    )
    for width in (16, 20, 24, 28, 32, 48):
        scale = width / face.box[2]
        small = cv2.resize(image, (round(512 * scale), round(512 * scale)), interpolation=cv2.INTER_AREA)
        enlarged = cv2.resize(small, (512, 512), interpolation=cv2.INTER_LINEAR)
        seen = [f for f in age.faces(enlarged) if f.age is not None]
        if seen:
            f = max(seen, key=lambda f: f.score)
            print(
                f"  shrunk to {width} px, enlarged: {f.age:.0f} ± {f.age_sd:.0f}, sharpness {f.sharpness:.0f}"
            )
    for sigma in (1, 2, 3, 4, 6):
        blurred = cv2.GaussianBlur(image, (0, 0), sigma)
        seen = [f for f in age.faces(blurred) if f.age is not None]
        text = "no face aged"
        if seen:
            f = max(seen, key=lambda f: f.score)
            sharp = face_sharpness(blurred, f.box)
            text = f"{f.age:.0f} ± {f.age_sd:.0f}, sharpness {sharp:.0f}, HOG {f.hog_agrees}"
        print(f"  blurred sigma {sigma}: {text}")


def textures() -> None:
    photos = {n: getattr(data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket")}
    photos["camera"] = np.stack([data.camera()] * 3, axis=-1)
    drawn = {"colour wheel": colour_wheel(), "webcam icon": webcam_icon()}
    for group, images in (("photos", photos), ("drawings", drawn)):
        values = ", ".join(f"{n} {texture(np.ascontiguousarray(i)):.2f}" for n, i in images.items())
        print(f"texture, {group}: {values}")


def composites(nudity: NudityDetector, age: AgeDetector) -> None:
    young = (5, 7, 43, 67, 94)
    cases = {f"wheel + LFW {i}": beside(colour_wheel(), lfw_face(i)) for i in young}
    cases["icon + LFW 67"] = beside(webcam_icon(), lfw_face(67))
    cases["wheel + astronaut"] = beside(colour_wheel(), data.astronaut())
    for name, image in cases.items():
        s = subject(image)
        d = decide([nudity.detect(s), age.detect(s)], PolicyConfig())
        print(f"composite {name}: {list(d.labels) or 'no label'}")


def main() -> None:
    age, nudity = AgeDetector(), NudityDetector()
    age.warm_up()
    nudity.warm_up()
    lfw(age)
    astronaut(age)
    textures()
    composites(nudity, age)


if __name__ == "__main__":
    main()
