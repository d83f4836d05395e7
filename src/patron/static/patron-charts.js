/* Draws every <div class="chart" data-chart="{data, layout}"> with Plotly.js (served by Patron).
 * Hover labels, zoom and pan (drag; double-click resets), legend clicks that hide a trace:
 * Plotly's own behaviour, kept on. In Chinese pages the toolbar and dates are in Chinese: the
 * plotly wheel ships no locale files, so the dictionary is here. No inline scripts needed. */
(function () {
  "use strict";

  var ZH = {
    moduleType: "locale",
    name: "zh-CN",
    dictionary: {
      "Autoscale": "自动缩放",
      "Box Select": "框选",
      "Lasso Select": "套索选择",
      "Compare data on hover": "悬停时比较数据",
      "Show closest data on hover": "悬停时显示最近的数据",
      "Toggle show closest data on hover": "切换悬停显示最近的数据",
      "Toggle Spike Lines": "切换参考线",
      "Double-click to zoom back out": "双击恢复原始缩放",
      "Double-click on legend to isolate one trace": "双击图例只显示该项",
      "Download plot as a png": "下载为 PNG 图片",
      "Download plot": "下载图表",
      "Pan": "平移",
      "Reset": "重置",
      "Reset axes": "重置坐标轴",
      "Reset view": "重置视图",
      "Snapshot succeeded": "截图成功",
      "Taking snapshot - this may take a few seconds": "正在截图，请稍候",
      "Zoom": "缩放",
      "Zoom in": "放大",
      "Zoom out": "缩小",
      "incoming flow count:": "流入数量：",
      "outgoing flow count:": "流出数量：",
      "Source:": "来源：",
      "Target:": "去向：",
      "trace": "序列"
    },
    format: {
      days: ["星期日", "星期一", "星期二", "星期三", "星期四", "星期五", "星期六"],
      shortDays: ["周日", "周一", "周二", "周三", "周四", "周五", "周六"],
      months: ["一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月", "十月",
               "十一月", "十二月"],
      shortMonths: ["1月", "2月", "3月", "4月", "5月", "6月", "7月", "8月", "9月", "10月",
                    "11月", "12月"],
      date: "%Y-%m-%d",
      decimal: ".",
      thousands: ","
    }
  };

  function pageLocale() {
    return (document.documentElement.lang || "").toLowerCase().indexOf("zh") === 0
      ? "zh-CN" : "en";
  }

  function draw(el) {
    var spec;
    try {
      spec = JSON.parse(el.getAttribute("data-chart"));
    } catch (err) {
      el.setAttribute("data-chart-error", String(err));
      return null;
    }
    var config = {
      responsive: true,
      displaylogo: false,
      locale: pageLocale(),
      scrollZoom: false,
      modeBarButtonsToRemove: ["select2d", "lasso2d"],
      toImageButtonOptions: {filename: el.id || "patron-chart"}
    };
    return window.Plotly.newPlot(el, spec.data, spec.layout || {}, config).then(function () {
      el.setAttribute("data-drawn", "1");
      el.style.minHeight = "";
      return el;
    });
  }

  function drawAll(root) {
    var found = (root || document).querySelectorAll("div.chart[data-chart]:not([data-drawn])");
    return Array.prototype.map.call(found, draw);
  }

  function start() {
    if (!window.Plotly) {
      return; // the library did not load: the page's own tables still carry the figures
    }
    window.Plotly.register(ZH);
    drawAll(document);
  }

  window.PatronCharts = {draw: draw, drawAll: drawAll};
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
