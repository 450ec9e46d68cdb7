#!/usr/bin/env python3
# Checks an SVG from `ppnctl plot` against the history document it was drawn from
# (`ppnctl history VM --json`): the SVG parses as XML, has one panel per VM, and every point of
# the target, actual and guest-use series maps back, through the panel's own scale attributes,
# to a sample (time and value within a hundredth of a pixel), in order, with none missing and
# a new subpath after every unknown value. Min/max lines carry the VM's values; every decision in
# the span has a mark.
# usage: check-plot.py FILE.svg HISTORY.json   (exit 0 if all holds; says what does not)
import json
import re
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"


def fail(msg):
    print(f"check-plot: {msg}", file=sys.stderr)
    sys.exit(1)


def used(s):
    a, t = s["guest_available_bytes"], s["actual_bytes"]
    return None if a is None or t is None or a > t else t - a


def path_points(d):
    """[(cmd, x, y)] of an absolute M/L path."""
    return [(c, float(x), float(y)) for c, x, y in re.findall(r"([ML])(-?[\d.]+) (-?[\d.]+)", d)]


def check_series(panel, name, cls, samples, get, t0, t1):
    scale = {k: float(panel.get("data-" + k)) for k in ("x0", "x1", "y0", "y1", "t0", "t1", "ymax")}
    path = panel.find(f"{NS}path[@class='{cls}']")
    if path is None:
        fail(f"{name}: no {cls} series")
    pts = path_points(path.get("d"))
    want, pen = [], False
    for s in samples:
        v = get(s)
        if v is None or not (t0 <= s["time_usec"] <= t1):
            pen = False
            continue
        want.append(("L" if pen else "M", s["time_usec"], min(v, scale["ymax"])))
        pen = True
    if len(pts) != len(want):
        fail(f"{name}: {cls} has {len(pts)} points, the history has {len(want)} samples to draw")
    px_t = (scale["t1"] - scale["t0"]) / (scale["x1"] - scale["x0"])
    px_b = scale["ymax"] / (scale["y0"] - scale["y1"])
    for i, ((c, x, y), (wc, wt, wv)) in enumerate(zip(pts, want)):
        t = scale["t0"] + (x - scale["x0"]) * px_t
        b = (scale["y0"] - y) * px_b
        if c != wc or abs(t - wt) > 0.01 * px_t or abs(b - wv) > 0.01 * px_b:
            fail(f"{name}: {cls} point {i} is {c} t={t:.0f} bytes={b:.0f}, want {wc} t={wt} bytes={wv}")
    return len(pts)


def main():
    svg_path, hist_path = sys.argv[1], sys.argv[2]
    try:
        root = ET.parse(svg_path).getroot()
    except ET.ParseError as e:
        fail(f"{svg_path} is not well-formed XML: {e}")
    doc = json.load(open(hist_path))
    panels = {g.get("data-vm"): g for g in root.iter(f"{NS}g") if g.get("class") == "vm"}
    if set(panels) != {v["name"] for v in doc["vms"]}:
        fail(f"panels {sorted(panels)} != VMs {sorted(v['name'] for v in doc['vms'])}")
    for vm in doc["vms"]:
        g = panels[vm["name"]]
        t0, t1 = int(g.get("data-t0")), int(g.get("data-t1"))
        if (t0, t1) != (doc["since_usec"], doc["now_usec"]):
            fail(f"{vm['name']}: span {t0}..{t1} != the document's {doc['since_usec']}..{doc['now_usec']}")
        n = 0
        n += check_series(g, vm["name"], "target", vm["samples"], lambda s: s["target_bytes"], t0, t1)
        n += check_series(g, vm["name"], "actual", vm["samples"], lambda s: s["actual_bytes"], t0, t1)
        n += check_series(g, vm["name"], "used", vm["samples"], used, t0, t1)
        for cls in ("min", "max"):
            line = g.find(f"{NS}line[@class='{cls}']")
            if line is None or int(line.get("data-bytes")) != vm[f"{cls}_bytes"]:
                fail(f"{vm['name']}: {cls} line missing or not at {vm[cls + '_bytes']}")
        marks = [m for m in g.iter(f"{NS}g") if m.get("class") == "mark"]
        want = [e for e in vm["events"] if t0 <= e["time_usec"] <= t1]
        if [int(m.get("data-time-usec")) for m in marks] != [e["time_usec"] for e in want]:
            fail(f"{vm['name']}: {len(marks)} marks, {len(want)} decisions in the span")
        for m, e in zip(marks, want):
            title = m.find(f"{NS}title").text
            if e["reason"] not in title or not title.startswith(e["kind"]):
                fail(f"{vm['name']}: mark '{title}' does not carry '{e['kind']}: {e['reason']}'")
        print(f"{vm['name']}: {n} points and {len(marks)} marks match {len(vm['samples'])} samples")


main()
