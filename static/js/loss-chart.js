// The live loss curve of a training page. The server draws the curve from the database (the page works
// without JavaScript); each training step's websocket message appends a point (<i data-step data-loss>)
// to the chart's hidden [data-loss-points], and this module redraws the polyline from all points the
// same way generation/training_selectors.loss_chart does.
const PAD = 6;

function pointsOf(chart) {
  let points = [];
  try { points = JSON.parse(chart.dataset.losses || "[]"); } catch { points = []; }
  const seen = new Set(points.map(([step]) => step));
  chart.querySelectorAll("[data-loss-points] i").forEach((point) => {
    const step = Number(point.dataset.step), loss = Number(point.dataset.loss);
    if (Number.isFinite(step) && Number.isFinite(loss) && !seen.has(step)) { points.push([step, loss]); seen.add(step); }
  });
  return points.filter(([, loss]) => Number.isFinite(loss)).sort((a, b) => a[0] - b[0]);
}

export function draw(chart) {
  const svg = chart.querySelector("svg");
  const line = chart.querySelector("[data-loss-line]");
  if (!svg || !line) return;
  const points = pointsOf(chart);
  if (!points.length) return;
  const [, , width, height] = svg.getAttribute("viewBox").split(/\s+/).map(Number);
  const losses = points.map(([, loss]) => loss);
  const low = Math.min(...losses), high = Math.max(...losses), span = high - low || 1;
  const steps = Math.max(Number(chart.dataset.totalSteps) || 1, points[points.length - 1][0], 1);
  const innerW = width - 2 * PAD, innerH = height - 2 * PAD;
  const y = (loss) => PAD + (high === low ? innerH / 2 : (high - loss) / span * innerH);
  line.setAttribute("points", points.map(([step, loss]) =>
    `${(PAD + step / steps * innerW).toFixed(1)},${y(loss).toFixed(1)}`).join(" "));
  chart.dataset.drawn = String(points.length);
  const summary = chart.querySelector("[data-loss-summary]");
  const [lastStep, lastLoss] = points[points.length - 1];
  if (summary) summary.textContent = `${lastLoss.toFixed(4)} at step ${lastStep} · range ${low.toFixed(4)}–${high.toFixed(4)}`;
}

function drawAll() { document.querySelectorAll("[data-loss-chart]").forEach(draw); }

document.addEventListener("htmx:wsAfterMessage", drawAll);
document.addEventListener("htmx:afterSettle", drawAll);
drawAll();
