// Line charts drawn as SVG, with no library. Every point is a <circle> carrying its values as data
// attributes (data-series, data-x, data-y and any extras), so what the chart shows can be read back
// exactly (the browser tests compare them with the REST API) and each point has a hover tooltip.

import { h, svg } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 260;
const MARGIN = { top: 14, right: 18, bottom: 40, left: 62 };
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
  "#4b5563", "#65a30d", "#7c3aed", "#0d9488"];
export const MEAN_COLOR = "#111827";

// A stable colour per series name across every chart of a page.
export function colorFor(index) {
  return PALETTE[index % PALETTE.length];
}

// "Nice" tick values (1, 2, 5 × 10^k) covering [min, max].
export function ticks(min, max, count = 5) {
  if (!(max > min)) return [min];
  const raw = (max - min) / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const out = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return out;
}

function tickLabel(t) {
  const abs = Math.abs(t);
  return abs !== 0 && (abs >= 1e6 || abs < 1e-4) ? t.toExponential(1) : String(Number(t.toPrecision(10)));
}

function domain(values, { integer = false } = {}) {
  let min = Math.min(...values);
  let max = Math.max(...values);
  if (min === max) {
    const pad = integer ? 1 : Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
  } else if (!integer) {
    const pad = (max - min) * 0.08;
    min -= pad;
    max += pad;
  }
  return [min, max];
}

// spec: {title, xLabel, yLabel, integerX, series: [{name, label, color, dashed, width, points: [{x, y, data}]}],
//        markers: [{x, label}], testid, describe: (series, point) => tooltip}
export function lineChart(spec) {
  const series = spec.series.filter((s) => s.points.length);
  const points = series.flatMap((s) => s.points);
  const wrap = h("figure", { class: "chart", "data-testid": spec.testid, dataset: { metric: spec.metric } },
    h("figcaption", {}, spec.title));
  if (!points.length) {
    wrap.append(h("p", { class: "empty" }, spec.empty || "No values yet."));
    return wrap;
  }
  const [x0, x1] = domain(points.map((p) => p.x), { integer: spec.integerX });
  const [y0, y1] = domain(points.map((p) => p.y));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const sx = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
  const sy = (y) => MARGIN.top + (1 - (y - y0) / (y1 - y0)) * plotH;

  const grid = svg("g", { class: "grid" });
  const axes = svg("g", { class: "axes" });
  for (const t of ticks(y0, y1, 5)) {
    grid.append(svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: sy(t), y2: sy(t) }));
    axes.append(svg("text", { x: MARGIN.left - 6, y: sy(t) + 4, "text-anchor": "end" }, tickLabel(t)));
  }
  let xTicks = ticks(x0, x1, 8);
  if (spec.integerX) xTicks = xTicks.filter((t) => Number.isInteger(t));
  for (const t of xTicks) {
    axes.append(svg("text", { x: sx(t), y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" }, tickLabel(t)));
  }
  axes.append(
    svg("line", { x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }),
    svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: HEIGHT - MARGIN.bottom, y2: HEIGHT - MARGIN.bottom }),
    svg("text", { x: MARGIN.left + plotW / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "label" }, spec.xLabel || ""),
    svg("text", { x: 14, y: MARGIN.top + plotH / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 14 ${MARGIN.top + plotH / 2})` }, spec.yLabel || ""),
  );

  const markers = svg("g", { class: "markers" });
  for (const m of spec.markers || []) {
    if (m.x < x0 || m.x > x1) continue;
    markers.append(
      svg("line", { x1: sx(m.x), x2: sx(m.x), y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }),
      svg("text", { x: sx(m.x) + 3, y: MARGIN.top + 10 }, m.label),
    );
  }

  const lines = svg("g", { class: "series" });
  for (const s of series) {
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    const d = sorted.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    const group = svg("g", { class: "line", dataset: { series: s.name } });
    group.append(svg("path", { d, fill: "none", stroke: s.color, "stroke-width": s.width || 2,
      "stroke-dasharray": s.dashed ? "6 4" : null }));
    for (const p of sorted) {
      const tip = spec.describe ? spec.describe(s, p) : `${s.label || s.name}: ${p.y} at ${p.x}`;
      group.append(svg("circle", {
        cx: sx(p.x).toFixed(1), cy: sy(p.y).toFixed(1), r: s.dashed ? 3 : 3.5, fill: s.color,
        class: "point", dataset: { series: s.name, x: p.x, y: p.y, ...(p.data || {}) },
      }, svg("title", {}, tip)));
    }
    lines.append(group);
  }

  wrap.append(
    svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": spec.title, class: "plot" },
      grid, markers, axes, lines),
    h("div", { class: "legend" }, series.map((s) => h("span", { class: "key", dataset: { series: s.name } },
      h("i", { style: `background:${s.color}${s.dashed ? ";opacity:.85" : ""}`, class: s.dashed ? "dashed" : null }),
      s.label || s.name))),
  );
  return wrap;
}
