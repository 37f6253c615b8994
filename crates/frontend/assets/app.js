// Switchboard test page: each button sends one request to the broker and shows
// the JSON sent, the JSON received and a line in Output, in red for any
// failure (an HTTP error status, an {"error": true} reply, or no answer).
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

  setPending(0);
  document.body.dataset.ready = "true";
})();
