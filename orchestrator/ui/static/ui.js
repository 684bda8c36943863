/* The orchestrator UI's script, no library: status counts on the runs page; on a run page,
   node panels with their logs, live updates while the run is active (a poll of
   /api/runs/<id> every second, stopping when it is over), and the Cancel and Re-run buttons.
   Everything shown is set as text (textContent), never as HTML. */
(function () {
  "use strict";

  var ACTIVE = ["pending", "running"];
  var LIVE_NODES = ["running", "waiting"];
  var POLL_MS = 1000;

  // -- helpers ------------------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function link(href, text, className) {
    var a = el("a", className, text);
    a.href = href;
    return a;
  }

  function badge(status) {
    return el("span", "badge status-" + safeClass(status), status);
  }

  function safeClass(text) {
    return String(text).replace(/[^A-Za-z0-9_-]/g, "");
  }

  function runUrl(id) { return "/runs/" + encodeURIComponent(id); }
  function workflowUrl(name) { return "/workflows/" + encodeURIComponent(name); }

  /* As orchestrator.views.display.seconds: `0.12 s`, `3.4 s`, `2 min 5 s`, or `-`. */
  function seconds(value) {
    if (value === null || value === undefined) return "-";
    if (value < 10) return value.toFixed(2) + " s";
    if (value < 120) return value.toFixed(1) + " s";
    return Math.floor(value / 60) + " min " + Math.floor(value % 60) + " s";
  }

  function duration(started, finished) {
    if (!started) return null;
    var end = finished ? Date.parse(finished) : Date.now();
    return Math.max(0, (end - Date.parse(started)) / 1000);
  }

  /* A time as the server writes it: UTC, to the second. */
  function when(iso) {
    if (!iso) return "-";
    return new Date(iso).toISOString().replace("T", " ").slice(0, 19);
  }

  function pretty(value) {
    return JSON.stringify(value === undefined ? null : value, null, 2);
  }

  function setText(root, field, text) {
    var node = root.querySelector('[data-field="' + field + '"]');
    if (node && node.textContent !== text) node.textContent = text;
    return node;
  }

  function setBadge(root, field, status) {
    var node = root.querySelector('[data-field="' + field + '"]');
    if (!node) return;
    var current = node.querySelector(".badge");
    if (current && current.textContent === status) return;
    node.textContent = "";
    node.appendChild(badge(status));
  }

  function answer(response) {
    return response.text().then(function (text) {
      var body = null;
      try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
      if (!response.ok) throw new Error((body && body.error) || response.status + " " + response.statusText);
      return body;
    });
  }

  function getJson(url) {
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(answer);
  }

  function postJson(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "X-Requested-With": "orchestrator",
        "Content-Type": "application/json",
        Accept: "application/json"
      },
      body: JSON.stringify(body || {})
    }).then(answer);
  }

  // -- the runs page ------------------------------------------------------------------------

  function runsPage(main) {
    var box = document.getElementById("counts");
    if (!box) return;
    getJson(main.dataset.countsUrl).then(function (data) {
      var params = new URLSearchParams(location.search);
      params.delete("cursor");
      params.delete("status");
      box.textContent = "";
      var all = link("/?" + params.toString(), "all " + data.total, "count-all");
      box.appendChild(all);
      Object.keys(data.counts).forEach(function (status) {
        params.set("status", status);
        var a = link("/?" + params.toString(), "", "count");
        a.dataset.status = status;
        a.appendChild(badge(status));
        a.appendChild(document.createTextNode(" " + data.counts[status]));
        box.appendChild(a);
      });
    }).catch(function (error) {
      box.textContent = "counts unavailable: " + error.message;
    });
  }

  // -- a run's page -------------------------------------------------------------------------

  function runPage(main) {
    var api = main.dataset.api;
    var openNode = null;
    var timer = null;
    var childrenKey = null;
    var polls = 0;

    function nodeBox(id) {
      return document.querySelector('svg.graph .node[data-node="' + CSS.escape(id) + '"]');
    }

    function panelOf(id) {
      return document.querySelector('.node-panel[data-panel="' + CSS.escape(id) + '"]');
    }

    function openPanel(id) {
      document.querySelectorAll(".node-panel").forEach(function (p) { p.hidden = true; });
      document.querySelectorAll("svg.graph .node.selected").forEach(function (g) { g.classList.remove("selected"); });
      var panel = panelOf(id);
      if (!panel) return;
      panel.hidden = false;
      var box = nodeBox(id);
      if (box) box.classList.add("selected");
      openNode = id;
      loadLogs(id);
    }

    function closePanels() {
      document.querySelectorAll(".node-panel").forEach(function (p) { p.hidden = true; });
      document.querySelectorAll("svg.graph .node.selected").forEach(function (g) { g.classList.remove("selected"); });
      openNode = null;
    }

    function loadLogs(id) {
      var panel = panelOf(id);
      if (!panel) return;
      var box = panel.querySelector('[data-field="logs"]');
      getJson(api + "/logs?node=" + encodeURIComponent(id)).then(function (data) {
        renderLogs(box, data.logs);
      }).catch(function (error) {
        box.textContent = "logs unavailable: " + error.message;
      });
    }

    function renderLogs(box, logs) {
      box.textContent = "";
      if (!logs.length) {
        box.appendChild(el("p", "muted", "No log lines."));
        return;
      }
      logs.forEach(function (log) {
        if (logs.length > 1) box.appendChild(el("div", "log-attempt", "attempt " + log.attempt));
        if (log.cut_lines > 0) {
          var s = log.cut_lines === 1 ? "" : "s";
          box.appendChild(el("div", "log-cut", log.cut_lines + " earlier line" + s + " cut"));
        }
        log.lines.forEach(function (line) {
          var row = el("div", "log-line level-" + safeClass(line.level));
          row.appendChild(el("span", "t", new Date(line.t * 1000).toISOString().slice(11, 23)));
          row.appendChild(el("span", "level", line.level));
          row.appendChild(document.createTextNode(line.text));
          box.appendChild(row);
        });
      });
    }

    function updateNode(id, state) {
      var box = nodeBox(id);
      var took = state.started_at ? seconds(duration(state.started_at, state.finished_at)) : "";
      if (box) {
        var cls = "node status-" + safeClass(state.status) + (id === openNode ? " selected" : "");
        if (box.getAttribute("class") !== cls) box.setAttribute("class", cls);
        setText(box, "duration", took);
        var n = state.attempts || 0;
        setText(box, "attempts", n > 0 ? n + (n === 1 ? " attempt" : " attempts") : "");
      }
      var panel = panelOf(id);
      if (!panel) return;
      setBadge(panel, "status", state.status);
      setText(panel, "attempts", String(state.attempts || 0));
      setText(panel, "started", when(state.started_at));
      setText(panel, "finished", when(state.finished_at));
      setText(panel, "duration", seconds(duration(state.started_at, state.finished_at)));
      setText(panel, "output", pretty(state.output));
      setText(panel, "error", state.error || "");
      setText(panel, "traceback", state.traceback || "");
      panel.querySelector('[data-field="error-box"]').hidden = !state.error;
      panel.querySelector('[data-field="traceback-box"]').hidden = !state.traceback;
    }

    function tree(runs) {
      var ul = el("ul", "tree");
      runs.forEach(function (child) {
        var li = el("li");
        li.dataset.run = child._id;
        li.appendChild(link(runUrl(child._id), child._id, "run-id"));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(link(workflowUrl(child.workflow), child.workflow, "workflow"));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(badge(child.status));
        if (child.parent_node_id) {
          li.appendChild(document.createTextNode(" "));
          li.appendChild(el("span", "muted", "from node " + child.parent_node_id));
        }
        if (child.children && child.children.length) li.appendChild(tree(child.children));
        ul.appendChild(li);
      });
      return ul;
    }

    function treeKey(runs) {
      return JSON.stringify((runs || []).map(function (c) { return [c._id, c.status, treeKey(c.children)]; }));
    }

    function updateChildren(children) {
      var key = treeKey(children);
      if (key === childrenKey) return;
      var first = childrenKey === null;
      childrenKey = key;
      if (first) return; // the server drew them
      var box = main.querySelector('[data-field="children"]');
      box.textContent = "";
      box.appendChild(children.length ? tree(children) : el("p", "muted", "None."));
    }

    function update(run) {
      setBadge(main, "run-status", run.status);
      setText(main, "run-started", when(run.started_at));
      setText(main, "run-finished", when(run.finished_at));
      setText(main, "run-duration", seconds(duration(run.started_at, run.finished_at)));
      var error = setText(main, "run-error", run.error || "");
      if (error) error.hidden = !run.error;
      Object.keys(run.nodes || {}).forEach(function (id) { updateNode(id, run.nodes[id]); });
      var omitted = setText(main, "results-omitted", run.results_omitted || "");
      if (omitted) omitted.hidden = !run.results_omitted;
      setText(main, "results", pretty(run.results));
      updateChildren(run.children || []);
      polls += 1;
      if (openNode && run.nodes[openNode] && LIVE_NODES.indexOf(run.nodes[openNode].status) >= 0 && polls % 2 === 0) {
        loadLogs(openNode);
      }
    }

    function showActions(over, status) {
      main.dataset.over = over ? "true" : "false";
      main.querySelector('[data-action="cancel"]').hidden = over;
      main.querySelector('[data-action="rerun"]').hidden = !over;
      main.querySelector('[data-action="rerun-failed"]').hidden = !over || status === "finished";
      document.querySelectorAll('[data-action="rerun-node"]').forEach(function (b) { b.hidden = !over; });
      main.querySelector('[data-action="delete"]').hidden = !over || main.dataset.topLevel !== "true";
    }

    function schedule(ms) {
      clearTimeout(timer);
      timer = setTimeout(poll, ms);
    }

    function poll() {
      getJson(api).then(function (run) {
        update(run);
        if (ACTIVE.indexOf(run.status) >= 0) {
          schedule(POLL_MS);
        } else {
          showActions(true, run.status);
          if (openNode) loadLogs(openNode);
        }
      }).catch(function () {
        schedule(POLL_MS * 3); // the server or MongoDB away: try again, more slowly
      });
    }

    function act(button, path, body, navigate) {
      button.disabled = true;
      setText(main, "action-error", "");
      postJson(api + path, body).then(function (data) {
        if (navigate) {
          location.assign(runUrl(data.run_id));
          return;
        }
        button.disabled = false;
        schedule(0);
      }).catch(function (error) {
        button.disabled = false;
        setText(main, "action-error", error.message);
      });
    }

    document.querySelectorAll("svg.graph .node").forEach(function (g) {
      g.addEventListener("click", function () { openPanel(g.dataset.node); });
      g.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          openPanel(g.dataset.node);
        }
      });
    });
    document.querySelectorAll('[data-action="close-panel"]').forEach(function (b) {
      b.addEventListener("click", closePanels);
    });
    main.querySelector('[data-action="cancel"]').addEventListener("click", function (event) {
      act(event.currentTarget, "/cancel", {}, false);
    });
    main.querySelector('[data-action="rerun"]').addEventListener("click", function (event) {
      act(event.currentTarget, "/rerun", {}, true);
    });
    main.querySelector('[data-action="rerun-failed"]').addEventListener("click", function (event) {
      act(event.currentTarget, "/rerun", { from_failed: true }, true);
    });
    document.querySelectorAll('[data-action="rerun-node"]').forEach(function (b) {
      b.addEventListener("click", function () { act(b, "/rerun", { from_node: b.dataset.node }, true); });
    });
    main.querySelector('[data-action="delete"]').addEventListener("click", function (event) {
      var button = event.currentTarget;
      if (!window.confirm("Delete run " + main.dataset.runId + ", the runs it started and their logs? This cannot be undone.")) return;
      button.disabled = true;
      setText(main, "action-error", "");
      postJson(api + "/delete", {}).then(function () {
        location.assign("/");
      }).catch(function (error) {
        button.disabled = false;
        setText(main, "action-error", error.message);
      });
    });
    if (main.dataset.over !== "true") schedule(POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.getElementById("page");
    if (!main) return;
    if (main.dataset.page === "runs") runsPage(main);
    if (main.dataset.page === "run") runPage(main);
  });
})();
