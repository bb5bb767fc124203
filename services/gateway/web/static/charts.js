/* Draws each <canvas data-chart="ID"> from the JSON in <script id="ID"> beside it,
   with the vendored Chart.js. The same numbers are in a table next to each chart.
   A chart holds one unit: ``axis`` names it (吨, pieces, %), and a bar's tooltip reads
   its figure as the table does (``texts``). */
(function () {
  "use strict";
  function draw(canvas) {
    var source = document.getElementById(canvas.getAttribute("data-chart"));
    if (!source || typeof window.Chart === "undefined") { return; }
    var spec = JSON.parse(source.textContent);
    var datasets = spec.datasets.map(function (set) {
      return { label: set.label, data: set.data, backgroundColor: set.color, borderColor: set.color,
               borderWidth: spec.type === "line" ? 2 : 0, fill: false, tension: 0.2,
               texts: set.texts || null };
    });
    var axis = spec.horizontal ? "y" : "x";
    var value = spec.horizontal ? "x" : "y";
    var scales = {};
    scales[axis] = { stacked: !!spec.stacked, ticks: { autoSkip: false } };
    scales[value] = { stacked: !!spec.stacked, beginAtZero: true,
                      title: { display: !!spec.axis, text: spec.axis || "" } };
    if (typeof spec.max === "number") { scales[value].max = spec.max; }
    canvas.chart = new window.Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        indexAxis: axis,
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: scales,
        plugins: {
          legend: { display: spec.legend !== false, position: "bottom" },
          tooltip: { callbacks: { label: function (item) {
            var texts = item.dataset.texts;
            var shown = texts ? texts[item.dataIndex] : item.formattedValue;
            return item.dataset.label ? item.dataset.label + ": " + shown : shown;
          } } }
        }
      }
    });
    canvas.setAttribute("data-drawn", "true");
  }
  function start() { document.querySelectorAll("canvas[data-chart]").forEach(draw); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
})();
