/* Draws the analytics dashboard's charts from the JSON the page embeds (#dashboard-data).
 * Chart.js is the vendored UMD build (window.Chart); nothing is fetched from elsewhere. */
(function () {
  "use strict";

  var COLORS = {
    actual: "#417690",
    expected: "#c9d6df",
    funnel: "#5b8db8",
    promotions: "#2e8b57",
    demotions: "#c0392b",
    issued: "#417690",
    redeemed: "#e6a23c",
    expired: "#9e9e9e",
    density: ["#9fc5e3", "#417690"],
  };

  function percent(value) {
    return (value * 100).toFixed(1) + "%";
  }

  function weekLabels(rows) {
    return rows.map(function (row) { return row.week_start; });
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) {
      return null;
    }
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false }, config.options || {});
    return new window.Chart(canvas, config);
  }

  function tierDistribution(data) {
    var tiers = data.distribution.tiers;
    draw("chart-distribution", {
      type: "bar",
      data: {
        labels: tiers.map(function (tier) { return tier.name; }),
        datasets: [
          { label: "Actual share", data: tiers.map(function (tier) { return tier.share; }), backgroundColor: COLORS.actual },
          { label: "Expected share", data: tiers.map(function (tier) { return tier.expected_share; }), backgroundColor: COLORS.expected },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, ticks: { callback: percent } } },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (item) {
                var tier = tiers[item.dataIndex];
                var extra = item.datasetIndex === 0 ? " (" + tier.count + " members)" : "";
                return item.dataset.label + ": " + percent(item.raw) + extra;
              },
            },
          },
        },
        // Any click in a tier's column opens the member list filtered by that tier.
        onClick: function (event, elements, chart) {
          var hits = chart.getElementsAtEventForMode(event, "index", { intersect: false }, true);
          if (hits.length) {
            window.location.assign(tiers[hits[0].index].url);
          }
        },
        onHover: function (event, elements) {
          event.native.target.style.cursor = elements.length ? "pointer" : "default";
        },
      },
    });
  }

  function funnel(data) {
    var steps = data.funnel.steps;
    draw("chart-funnel", {
      type: "bar",
      data: {
        labels: steps.map(function (step) { return step.label; }),
        datasets: [{ label: "Members", data: steps.map(function (step) { return step.count; }), backgroundColor: COLORS.funnel }],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              afterLabel: function (item) {
                var step = steps[item.dataIndex];
                var lines = ["Of registered: " + percent(step.share_of_registered)];
                if (step.step_conversion !== null) {
                  lines.push("Step conversion: " + percent(step.step_conversion));
                }
                return lines;
              },
            },
          },
        },
      },
    });
  }

  function health(data) {
    var previous = data.health.previous_post_density;
    var current = data.health.post_density;
    draw("chart-health", {
      type: "bar",
      data: {
        labels: ["Week before", "Week of " + data.health.week_start],
        datasets: [{ label: "Posts per 100 members", data: [previous, current], backgroundColor: COLORS.density }],
      },
      options: {
        scales: { y: { beginAtZero: true } },
        plugins: { legend: { display: false }, title: { display: true, text: "Post density (posts per 100 members)" } },
      },
    });
  }

  function movement(data) {
    var weeks = data.movement;
    draw("chart-movement", {
      type: "bar",
      data: {
        labels: weekLabels(weeks),
        datasets: [
          { label: "Promotions", data: weeks.map(function (week) { return week.promotions; }), backgroundColor: COLORS.promotions },
          { label: "Demotions", data: weeks.map(function (week) { return -week.demotions; }), backgroundColor: COLORS.demotions },
        ],
      },
      options: {
        scales: { x: { stacked: true }, y: { stacked: true, ticks: { precision: 0 } } },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (item) { return item.dataset.label + ": " + Math.abs(item.raw); },
            },
          },
        },
      },
    });
  }

  function points(data) {
    var weeks = data.points;
    draw("chart-points", {
      type: "bar",
      data: {
        labels: weekLabels(weeks),
        datasets: [
          { label: "Issued", data: weeks.map(function (week) { return week.issued; }), backgroundColor: COLORS.issued },
          { label: "Redeemed", data: weeks.map(function (week) { return week.redeemed; }), backgroundColor: COLORS.redeemed },
          { label: "Expired", data: weeks.map(function (week) { return week.expired; }), backgroundColor: COLORS.expired },
        ],
      },
      options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
  }

  function init() {
    var source = document.getElementById("dashboard-data");
    if (!source || !window.Chart) {
      return;
    }
    var data = JSON.parse(source.textContent);
    // Drawn at once: no animation to wait for (screenshots, the browser test, slow machines).
    window.Chart.defaults.animation = false;
    tierDistribution(data);
    funnel(data);
    health(data);
    movement(data);
    points(data);
    document.body.setAttribute("data-dashboard-ready", "true");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
}());
