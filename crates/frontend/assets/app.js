// Switchboard test page: each button sends one request to the broker and shows
// the JSON sent, the JSON received and a line in Output, in red for any
// failure (an HTTP error status, an {"error": true} reply, or no answer).
// Below them, the system at work: every downstream's state and the newest log
// entries (polled from the broker, where its operator exposes them), and a
// comparison of the four log transports' latency, drawn by the page itself.
"use strict";

(function () {
  const REQUEST_TIMEOUT_MS = 15000;

  const meta = document.querySelector('meta[name="switchboard-broker-url"]');
  const brokerUrl = (meta ? meta.content : "").replace(/\/+$/, "");

  const logEntry = (via) => ({
    action: "log",
    log: { name: "event", data: "Some kind of data", via: via },
  });

  // Button id -> what it sends (the broker contract in ARCHITECTURE.md).
  const tests = {
    brokerBtn: { label: "Test Broker", path: "/", body: null },
    authBrokerBtn: {
      label: "Test Auth",
      path: "/handle",
      body: { action: "auth", auth: { email: "admin@example.com", password: "verysecret" } },
    },
    logBtn: { label: "Test Log (RPC)", path: "/handle", body: logEntry("rpc") },
    logGBtn: {
      label: "Test gRPC log",
      path: "/log-grpc",
      body: { action: "log", log: { name: "event", data: "Some kind of gRPC data" } },
    },
    logAmqpBtn: { label: "Test Log via RabbitMQ", path: "/handle", body: logEntry("amqp") },
    logHttpBtn: { label: "Test Log via HTTP", path: "/handle", body: logEntry("http") },
    mailBtn: {
      label: "Test Mail",
      path: "/handle",
      body: {
        action: "mail",
        mail: { from: "me@example.com", to: "you@there.com", subject: "Test email", message: "Hello world!" },
      },
    },
  };

  const output = document.getElementById("output");
  const sent = document.getElementById("payload");
  const sentRequest = document.getElementById("sent-request");
  const received = document.getElementById("received");
  const receivedStatus = document.getElementById("received-status");

  let pending = 0;
  let latest = 0; // Only the newest request may fill the Sent/Received panes.

  function setPending(delta) {
    pending += delta;
    document.body.dataset.pending = String(pending);
  }

  function clearPlaceholder(element) {
    if (element.querySelector(".placeholder")) {
      element.textContent = "";
    }
  }

  function timestamp() {
    return new Date().toLocaleTimeString([], { hour12: false });
  }

  function addEntry(label) {
    clearPlaceholder(output);
    const entry = document.createElement("div");
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = timestamp();
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label + ":";
    const message = document.createElement("span");
    message.className = "message";
    entry.append(time, name, message);
    output.appendChild(entry);
    return entry;
  }

  function setEntry(entry, kind, text) {
    entry.className = "entry " + kind;
    entry.dataset.state = kind;
    entry.querySelector(".message").textContent = text;
    output.scrollTop = output.scrollHeight;
  }

  function pretty(text) {
    try {
      return { data: JSON.parse(text), shown: JSON.stringify(JSON.parse(text), null, 2) };
    } catch (_) {
      return { data: null, shown: text === "" ? "(empty body)" : text };
    }
  }

  async function runTest(test, button) {
    const sequence = ++latest;
    const url = brokerUrl + test.path;
    const init = { method: "POST", headers: { Accept: "application/json" } };
    if (test.body !== null) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(test.body);
    }

    sentRequest.textContent = "POST " + url;
    sent.textContent = test.body === null ? "(empty POST request)" : JSON.stringify(test.body, null, 2);
    received.textContent = "";
    receivedStatus.className = "caption";
    receivedStatus.textContent = "waiting for the broker...";

    const entry = addEntry(test.label);
    setEntry(entry, "pending", "POST " + url + " ...");
    button.disabled = true;
    setPending(1);

    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(url, Object.assign(init, { signal: controller.signal }));
      const text = await response.text();
      const body = pretty(text);
      const status = ("HTTP " + response.status + " " + response.statusText).trim();
      const message =
        body.data !== null && typeof body.data.message === "string" ? body.data.message : body.shown;
      const failed = !response.ok || (body.data !== null && body.data.error === true);
      if (sequence === latest) {
        received.textContent = body.shown;
        receivedStatus.className = failed ? "caption error" : "caption";
        receivedStatus.textContent = status;
      }
      setEntry(entry, failed ? "error" : "ok", failed ? status + ": " + message : message + " (" + status + ")");
    } catch (error) {
      const reason =
        error.name === "AbortError"
          ? "no answer within " + REQUEST_TIMEOUT_MS / 1000 + " s"
          : "network error (" + error.message + ")";
      if (sequence === latest) {
        received.textContent = "(no response)";
        receivedStatus.className = "caption error";
        receivedStatus.textContent = reason;
      }
      setEntry(entry, "error", "could not reach the broker at " + url + ": " + reason);
    } finally {
      clearTimeout(timer);
      button.disabled = false;
      setPending(-1);
    }
  }

  for (const [id, test] of Object.entries(tests)) {
    const button = document.getElementById(id);
    if (button) {
      button.addEventListener("click", () => runTest(test, button));
    }
  }

  document.getElementById("clearBtn").addEventListener("click", () => {
    output.textContent = "";
    sent.textContent = "";
    sentRequest.textContent = "";
    received.textContent = "";
    receivedStatus.textContent = "";
  });

  // --- The system at work: downstreams, newest entries, transports ---------

  const SVG = "http://www.w3.org/2000/svg";

  async function getJson(path) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(brokerUrl + path, {
        headers: { Accept: "application/json" },
        signal: controller.signal,
      });
      const body = pretty(await response.text()).data;
      return { status: response.status, body: body };
    } finally {
      clearTimeout(timer);
    }
  }

  // A panel fed by a GET the broker serves only when its operator exposes it.
  async function refresh(path, setting, caption, fill) {
    try {
      const { status, body } = await getJson(path);
      if (status === 404) {
        caption.className = "caption";
        caption.textContent = "not exposed by this broker ([admin] " + setting + " = false)";
        fill(null);
      } else if (status !== 200 || body === null || body.error) {
        caption.className = "caption error";
        caption.textContent = "HTTP " + status + ": " + (body && body.message ? body.message : "no JSON reply");
      } else {
        caption.className = "caption";
        caption.textContent = body.message + " at " + timestamp();
        fill(body.data || []);
      }
    } catch (error) {
      caption.className = "caption error";
      caption.textContent = "could not reach the broker: " + error.message;
    }
  }

  const downstreamList = document.getElementById("downstreams");
  const downstreamCaption = document.getElementById("downstreams-status");
  function showDownstreams(statuses) {
    downstreamList.textContent = "";
    for (const status of statuses || []) {
      const item = document.createElement("li");
      item.dataset.name = status.name;
      item.dataset.state = status.reachable ? "up" : "down";
      item.className = status.reachable ? "up" : "down";
      item.textContent = status.name + ": " + (status.reachable ? "reachable" : status.detail);
      downstreamList.appendChild(item);
    }
  }

  const logList = document.getElementById("logs");
  const logCaption = document.getElementById("logs-status");
  function showLogs(entries) {
    logList.textContent = "";
    for (const entry of entries || []) {
      const item = document.createElement("li");
      item.dataset.name = entry.name;
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = String(entry.created_at || "").replace("T", " ").replace(/\.\d+Z$/, "Z");
      const text = document.createElement("span");
      text.textContent = entry.name + ": " + entry.data;
      item.append(time, text);
      logList.appendChild(item);
    }
  }

  // The next poll is armed when the last one finished, so that a slow
  // answer never lands after a newer one.
  function poll(task, everyMs) {
    const again = () => task().finally(() => setTimeout(again, everyMs));
    again();
  }
  poll(() => refresh("/downstreams", "expose_downstreams", downstreamCaption, showDownstreams), 5000);
  poll(() => refresh("/logs?limit=10", "expose_logs", logCaption, showLogs), 2000);

  const TRANSPORTS = ["rpc", "grpc", "http", "amqp"];
  const compareButton = document.getElementById("compareBtn");
  const compareCount = document.getElementById("compareCount");
  const compareRows = document.querySelector("#compare-table tbody");
  const chart = document.getElementById("compare-chart");

  function percentile(sorted, p) {
    if (sorted.length === 0) {
      return NaN;
    }
    const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
    return sorted[rank];
  }

  // At most one request every 20 ms: the broker's default rate limit is
  // 100 per second per client, and a 429 would count as a failure here.
  const PACE_MS = 20;
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function timeTransport(via, count) {
    const latencies = [];
    let failed = 0;
    let previous = 0;
    for (let i = 0; i < count; i++) {
      await pause(Math.max(0, previous + PACE_MS - performance.now()));
      previous = performance.now();
      const body = { action: "log", log: { name: "compare-" + via, data: "request " + (i + 1), via: via } };
      const started = performance.now();
      try {
        const response = await fetch(brokerUrl + "/handle", {
          method: "POST",
          headers: { Accept: "application/json", "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
        await response.text();
        if (response.status === 202) {
          latencies.push(performance.now() - started);
        } else {
          failed++;
        }
      } catch (_) {
        failed++;
      }
    }
    latencies.sort((a, b) => a - b);
    return { via: via, requests: count, failed: failed, p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
  }

  function showRow(result) {
    const row = document.createElement("tr");
    row.dataset.via = result.via;
    for (const value of [result.via, result.requests, result.failed, result.p50, result.p99]) {
      const cell = document.createElement("td");
      cell.textContent = typeof value === "number" && !Number.isInteger(value)
        ? (Number.isNaN(value) ? "-" : value.toFixed(1))
        : String(value);
      row.appendChild(cell);
    }
    compareRows.appendChild(row);
  }

  function svg(name, attributes, text) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) {
      element.setAttribute(key, String(value));
    }
    if (text !== undefined) {
      element.textContent = text;
    }
    return element;
  }

  // Two bars per transport, p50 and p99, on one scale: drawn here, no library.
  function drawChart(results) {
    chart.textContent = "";
    const width = Number(chart.getAttribute("width"));
    const height = Number(chart.getAttribute("height"));
    const top = 20, bottom = 24, left = 8;
    const slot = (width - left) / results.length;
    const highest = Math.max(1, ...results.map((r) => (Number.isNaN(r.p99) ? 0 : r.p99)));
    const scale = (ms) => (Number.isNaN(ms) ? 0 : (ms / highest) * (height - top - bottom));
    results.forEach((result, index) => {
      const x = left + index * slot;
      for (const [offset, key] of [[0, "p50"], [1, "p99"]]) {
        const bar = scale(result[key]);
        chart.appendChild(svg("rect", {
          class: "bar " + key, "data-via": result.via,
          x: x + offset * (slot * 0.4), y: height - bottom - bar,
          width: slot * 0.36, height: bar,
        }));
        chart.appendChild(svg("text", {
          class: "value", x: x + offset * (slot * 0.4), y: height - bottom - bar - 4,
        }, Number.isNaN(result[key]) ? "-" : result[key].toFixed(1)));
      }
      chart.appendChild(svg("text", { class: "axis", x: x, y: height - 6 }, result.via));
    });
    chart.appendChild(svg("text", { class: "legend", x: width - 170, y: 12 }, "ms: p50 (light), p99 (dark)"));
  }

  compareButton.addEventListener("click", async () => {
    const count = Math.min(200, Math.max(1, Number(compareCount.value) || 20));
    compareButton.disabled = true;
    document.body.dataset.compare = "running";
    compareRows.textContent = "";
    chart.textContent = "";
    setPending(1);
    const results = [];
    try {
      for (const via of TRANSPORTS) {
        const result = await timeTransport(via, count);
        results.push(result);
        showRow(result);
      }
      drawChart(results);
    } finally {
      compareButton.disabled = false;
      setPending(-1);
      document.body.dataset.compare = "done";
    }
  });

  setPending(0);
  document.body.dataset.ready = "true";
})();
