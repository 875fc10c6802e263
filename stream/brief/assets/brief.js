// Marks each chart with how many of its shapes the browser laid out (a check that the charts
// drew, used by tests and handy when a mail client strips SVG), and highlights a bar on hover.
(function () {
  function mark() {
    var charts = document.querySelectorAll("svg.chart");
    var drawn = 0;
    charts.forEach(function (svg) {
      var shapes = svg.querySelectorAll("rect, path, line, circle");
      var laidOut = 0;
      shapes.forEach(function (shape) {
        var box = shape.getBBox();
        if (box.width > 0 || box.height > 0) { laidOut += 1; }
      });
      svg.setAttribute("data-rendered", String(laidOut));
      if (laidOut > 0) { drawn += 1; }
    });
    document.body.setAttribute("data-charts-rendered", drawn + "/" + charts.length);
  }
  document.addEventListener("mouseover", function (event) {
    if (event.target.classList && event.target.classList.contains("bar")) { event.target.style.opacity = "0.75"; }
  });
  document.addEventListener("mouseout", function (event) {
    if (event.target.classList && event.target.classList.contains("bar")) { event.target.style.opacity = ""; }
  });
  if (document.readyState === "complete") { mark(); } else { window.addEventListener("load", mark); }
})();
