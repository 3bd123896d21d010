// emit's dashboard, the live parts of the jobs table and of a job's page: each follows a
// WebSocket of the dashboard (opened with the session cookie) and re-reads over the
// dashboard's JSON routes when it may have missed something. Plain DOM, no framework.
"use strict";

const FINAL = new Set(["completed", "dead", "killed"]);
const RETRIABLE = new Set(["dead", "killed"]);
const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];
const REFUSED = new Set([4401, 4403, 4404]);

function shownTime(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) : "";
}

function json(value) {
  return JSON.stringify(value);
}

function socketUrl(path, query) {
  // The page's own host and scheme, whatever the server thought they were.
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.host = location.host;
  url.search = new URLSearchParams(query).toString();
  return url.href;
}

// Whether the page is live: "live" only once it is connected *and* up to date.
function liveState(text, on = false) {
  const state = document.getElementById("live-state");
  state.textContent = text;
  state.className = on ? "live-state on" : "live-state";
}

// A socket that comes back after a drop (not after a refusal). `query()` gives the
// query of each (re)connection.
function follow(path, query, onMessage) {
  const open = () => {
    const ws = new WebSocket(socketUrl(path, query()));
    ws.onopen = () => liveState("connecting…");
    ws.onmessage = (event) => onMessage(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (REFUSED.has(event.code)) {
        liveState(event.code === 4401 ? "not live: sign in again" : "not live");
        return;
      }
      liveState("reconnecting…");
      setTimeout(open, 1000);
    };
  };
  open();
}

function setBadge(badge, status) {
  badge.textContent = status;
  badge.className = `badge status-${status}`;
}

// ------------------------------------------------------------------- the jobs table

function jobsTable(root) {
  const body = document.getElementById("job-rows");
  const template = document.getElementById("job-row");
  const total = document.getElementById("jobs-total");
  const none = document.getElementById("no-jobs");
  const filter = { status: root.dataset.status, name: root.dataset.name };
  const firstPage = root.dataset.offset === "0";
  let since = null;
  let instance = null;
  let rereading = false;
  let again = false;
  let held = [];  // messages that came while a re-read was on its way

  function rowOf(jobId) {
    return body.querySelector(`tr[data-job-id="${CSS.escape(jobId)}"]`);
  }

  function field(tr, name) {
    return tr.querySelector(`[data-field="${name}"]`);
  }

  function setProgress(tr, percent) {
    field(tr, "bar").value = percent || 0;
    field(tr, "percent").textContent = percent == null ? "" : `${percent}%`;
  }

  function render(job) {
    const tr = template.content.firstElementChild.cloneNode(true);
    tr.dataset.jobId = job.id;
    const pick = tr.querySelector('input[name="ids"]');
    pick.value = job.id;
    pick.setAttribute("aria-label", `Select ${job.name} ${job.id}`);
    field(tr, "link").href = root.dataset.jobUrl.replace("JOB_ID", job.id);
    for (const name of ["name", "id", "attempt", "attempts", "createdAt", "updatedAt"]) {
      field(tr, name).textContent = job[name];
    }
    setBadge(field(tr, "status"), job.status);
    setProgress(tr, job.percent);
    return tr;
  }

  function apply(message) {
    const tr = rowOf(message.jobId);
    if (!tr) {
      const shown = (!filter.status || filter.status === message.status) &&
                    (!filter.name || filter.name === message.jobName);
      if (message.type === "created" && firstPage && shown) reread();
      return;
    }
    setBadge(field(tr, "status"), message.status);
    field(tr, "attempt").textContent = message.attemptNumber + 1;
    field(tr, "updatedAt").textContent = shownTime(message.timestamp);
    if (message.type === "progress" && message.data) setProgress(tr, message.data.percent);
    if (message.type === "retried") setProgress(tr, null);  // progress is per attempt
  }

  async function reread() {
    if (rereading) { again = true; return; }
    rereading = true;
    try {
      const answer = await fetch(root.dataset.rows, { credentials: "same-origin" });
      if (answer.ok) {
        const page = await answer.json();
        const picked = new Set([...body.querySelectorAll('input[name="ids"]:checked')]
          .map((input) => input.value));
        body.replaceChildren(...page.jobs.map(render));
        for (const input of body.querySelectorAll('input[name="ids"]')) {
          input.checked = picked.has(input.value);
        }
        total.textContent = `${page.total} job${page.total === 1 ? "" : "s"}`;
        none.hidden = page.jobs.length > 0;
        const offset = Number(root.dataset.offset);
        document.getElementById("jobs-range").textContent =
          `${page.jobs.length ? offset + 1 : 0}–${offset + page.jobs.length} of ${page.total}`;
        document.getElementById("older").hidden = offset + page.jobs.length >= page.total;
      }
    } finally {
      rereading = false;
      const waiting = held;
      held = [];
      for (const message of waiting) apply(message);
      if (again) { again = false; await reread(); }
    }
  }

  follow(root.dataset.stream, () => (since === null ? {} : { since, streamInstanceId: instance }),
    (message) => {
      if (message.type === "connected") {
        instance = message.streamInstanceId;
        // First connection (the page was read before it) or a gap: read the table again.
        if (since === null || message.missed) reread().then(() => liveState("live", true));
        else liveState("live", true);
        since = message.seq;
        return;
      }
      since = message.seq;
      if (rereading) held.push(message);
      else apply(message);
    });

  const all = document.getElementById("pick-all");
  all.addEventListener("change", () => {
    for (const input of body.querySelectorAll('input[name="ids"]')) input.checked = all.checked;
  });
  document.getElementById("bulk").addEventListener("submit", (event) => {
    const message = event.submitter && event.submitter.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
}

// ------------------------------------------------------------------------- one job

function jobPage(root) {
  const badge = document.getElementById("job-status");
  const events = document.getElementById("events");
  const logs = document.getElementById("logs");
  const noLogs = document.getElementById("no-logs");
  const level = LEVELS.indexOf(root.dataset.level);
  const shownLogs = new Set([...logs.children].map((li) => Number(li.dataset.seq)));
  let catchingUp = false;
  let heldLogs = [];

  function progressLine(container, progress, label) {
    const line = container.querySelector(":scope > .progress-line") || (() => {
      const made = document.createElement("div");
      made.className = "progress-line";
      made.innerHTML = '<progress max="100"></progress> <span class="pct"></span> <span class="msg"></span>';
      container.prepend(made);
      return made;
    })();
    const p = progress && typeof progress === "object" ? progress : {};
    const bar = line.querySelector("progress");
    bar.value = p.percent || 0;
    bar.setAttribute("aria-label", label);
    line.querySelector(".pct").textContent = p.percent == null ? "" : `${p.percent}%`;
    const none = !progress || typeof progress !== "object";
    line.querySelector(".msg").textContent = none ? "none reported in this attempt" : p.message || "";
  }

  function setProgress(progress) {
    const box = document.getElementById("progress");
    progressLine(box, progress, "Job progress");
    const parts = document.getElementById("sub-progress");
    const sub = progress && typeof progress.subProgress === "object" ? progress.subProgress : null;
    parts.replaceChildren(...Object.entries(sub || {}).map(([name, part]) => {
      const li = document.createElement("li");
      const title = document.createElement("span");
      title.className = "part";
      title.textContent = name;
      li.append(title);
      progressLine(li, part, `Progress of ${name}`);
      li.prepend(title);
      return li;
    }));
  }

  function setStatus(status) {
    setBadge(badge, status);
    document.getElementById("kill-form").hidden = FINAL.has(status);
    document.getElementById("retry-form").hidden = !RETRIABLE.has(status);
  }

  function setOutcome(outcome) {
    const parts = { result: "outcome-result", error: "outcome-error", reason: "outcome-reason" };
    for (const [name, id] of Object.entries(parts)) {
      const box = document.getElementById(id);
      box.hidden = !(name in outcome);
      if (name === "reason") box.querySelector(".reason").textContent = outcome.reason || "";
      else if (name in outcome) box.querySelector("pre").textContent = JSON.stringify(outcome[name], null, 2);
    }
    document.getElementById("outcome").hidden = Object.keys(outcome).length === 0;
  }

  function eventItem(type, attemptNumber, data, at) {
    const li = document.createElement("li");
    li.className = `event event-${type}`;
    const time = document.createElement("time");
    time.textContent = shownTime(at);
    const kind = document.createElement("strong");
    kind.className = "type";
    kind.textContent = type;
    const attempt = document.createElement("span");
    attempt.className = "attempt";
    attempt.textContent = `attempt ${attemptNumber + 1}`;
    li.append(time, " ", kind, " ", attempt);
    if (data !== null && data !== undefined) {
      const code = document.createElement("code");
      code.className = "data";
      code.textContent = json(data);
      li.append(" ", code);
    }
    return li;
  }

  function addLog(line) {
    if (shownLogs.has(line.seq) || LEVELS.indexOf(line.level) < level) return;
    shownLogs.add(line.seq);
    const li = document.createElement("li");
    li.className = `log level-${line.level}`;
    li.dataset.seq = line.seq;
    const time = document.createElement("time");
    time.textContent = shownTime(line.ts);
    const name = document.createElement("strong");
    name.className = "level";
    name.textContent = line.level;
    const text = document.createElement("span");
    text.className = "message";
    text.textContent = line.message;
    li.append(time, " ", name, " ", text);
    if (line.fields && Object.keys(line.fields).length) {
      const code = document.createElement("code");
      code.className = "fields";
      code.textContent = json(line.fields);
      li.append(" ", code);
    }
    logs.append(li);
    noLogs.hidden = true;
  }

  // The lines logged between the page's read and the stream's start.
  async function catchUp() {
    catchingUp = true;
    try {
      const after = Math.max(0, ...shownLogs);
      const query = new URLSearchParams({ after, level: LEVELS[level] });
      const answer = await fetch(`${root.dataset.logs}?${query}`, { credentials: "same-origin" });
      if (answer.ok) for (const line of (await answer.json()).logs) addLog(line);
    } finally {
      catchingUp = false;
      const waiting = heldLogs;
      heldLogs = [];
      for (const line of waiting) addLog(line);
    }
  }

  function outcomeOf(message, current) {
    const data = message.data || {};
    switch (message.type) {
      case "completed": return { result: data.result };
      case "dead": return { error: data.error };
      case "killed": return { reason: data.reason };
      case "retried": return data.manual ? {} : { error: data.error };
      default: return current;
    }
  }

  let outcome = {};
  follow(root.dataset.stream, () => ({}), (message) => {
    if (message.type === "init") {
      setStatus(message.status);
      setProgress(message.data.progress);
      events.replaceChildren(...message.events.map(
        (e) => eventItem(e.type, e.attemptNumber, e.data, e.createdAt)));
      outcome = message.outcome;
      setOutcome(outcome);
      document.getElementById("job-attempt").textContent = message.attemptNumber + 1;
      for (const [name, shown] of Object.entries(message.times)) {
        document.getElementById(`time-${name}`).textContent = shown;
      }
      catchUp().then(() => liveState("live", true));
      return;
    }
    if (message.type === "log") {
      if (catchingUp) heldLogs.push(message.data);
      else addLog(message.data);
      return;
    }
    events.append(eventItem(message.type, message.attemptNumber, message.data, message.timestamp));
    setStatus(message.status);
    document.getElementById("job-attempt").textContent = message.attemptNumber + 1;
    const at = shownTime(message.timestamp);
    document.getElementById("time-updated").textContent = at;
    if (message.type === "delivered") document.getElementById("time-delivered").textContent = at;
    if (message.type === "started") document.getElementById("time-started").textContent = at;
    if (["completed", "dead", "killed"].includes(message.type)) {
      document.getElementById("time-finished").textContent = at;
    }
    if (message.type === "progress") setProgress(message.data);
    if (message.type === "retried") setProgress(null);
    outcome = outcomeOf(message, outcome);
    setOutcome(outcome);
  });
}

const table = document.getElementById("jobs-live");
if (table) jobsTable(table);
const job = document.getElementById("job-live");
if (job) jobPage(job);
