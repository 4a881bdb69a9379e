// openopen8 console: the buttons and forms that change things call the admin API with
// the session cookie and the page's CSRF token. No framework; no admin token here.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function flash(text, fail) {
    var el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = fail ? "fail" : "";
    el.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(function () { el.hidden = true; }, fail ? 8000 : 3000);
  }

  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin",
                 headers: { "X-CSRF-Token": csrf, "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = { raw: t }; }
        if (!r.ok) {
          var err = (data && data.error) || {};
          var msg = err.message || ("HTTP " + r.status);
          throw new Error(msg);
        }
        return data;
      });
    });
  }

  // a form's fields as the API's JSON: empty fields left out, "a.b" names nested,
  // data-type="list" (comma-separated), "int", "bool" (a checkbox)
  function formBody(form) {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      var type = el.getAttribute("data-type");
      var v;
      if (type === "bool") { if (!el.checked) return; v = true; }
      else {
        v = el.value.trim();
        if (v === "") return;
        if (type === "list") v = v.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
        else if (type === "int") v = Number(v);
      }
      var keys = el.name.split("."), o = out;
      for (var i = 0; i < keys.length - 1; i++) o = o[keys[i]] = o[keys[i]] || {};
      o[keys[keys.length - 1]] = v;
    });
    return out;
  }

  function showResult(target, data) {
    var out = document.getElementById(target);
    if (!out) return;
    if (data && "ok" in data && "seconds" in data) {      // a channel test
      out.textContent = data.ok
        ? "✓ " + (data.event || data.detail) + " in " + data.seconds.toFixed(2) + " s"
        : "✗ " + (data.kind || "failed") + ": " + data.detail + " (" + data.seconds.toFixed(2) + " s)";
      out.className = data.ok ? "pass" : "fail";
    } else {
      out.textContent = JSON.stringify(data);
    }
  }

  function done(el, data) {
    var then = el.getAttribute("data-then") || "reload";
    if (then === "reload") { location.reload(); return; }
    if (then === "show") { showResult(el.getAttribute("data-out"), data); return; }
    if (then === "secret") {
      var box = document.getElementById(el.getAttribute("data-out"));
      document.getElementById("new-secret-value").textContent = data.secret;
      box.hidden = false;
      box.setAttribute("data-token", data.name);
      if (el.reset) el.reset();
      flash("Created token " + data.name + ". Copy its secret now.");
      refresh("#token-list");
    }
  }

  function run(el, method, path, body) {
    var ask = el.getAttribute("data-confirm");
    if (ask && !window.confirm(ask)) return;
    el.setAttribute("aria-busy", "true");
    if (el.tagName === "BUTTON") el.disabled = true;
    api(method, path, body).then(function (data) {
      done(el, data);
    }).catch(function (err) {
      flash(err.message, true);
    }).then(function () {
      el.removeAttribute("aria-busy");
      if (el.tagName === "BUTTON") el.disabled = false;
    });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var spec = form.getAttribute("data-api");
    if (!spec) return;
    ev.preventDefault();
    var parts = spec.split(" ");
    run(form, parts[0], parts[1], formBody(form));
  });

  document.addEventListener("click", function (ev) {
    var el = ev.target.closest("[data-api], [data-copy], #theme-toggle");
    if (!el || el.tagName === "FORM") return;
    if (el.id === "theme-toggle") { toggleTheme(); return; }
    if (el.hasAttribute("data-copy")) { copy(el); return; }
    var parts = el.getAttribute("data-api").split(" ");
    var body = el.getAttribute("data-body");
    run(el, parts[0], parts[1], body ? JSON.parse(body) : undefined);
  });

  document.addEventListener("change", function (ev) {
    var el = ev.target;
    var path = el.getAttribute && el.getAttribute("data-patch");
    if (!path) return;
    var body = {};
    body[el.getAttribute("data-field")] = Number(el.value);
    api("PATCH", path, body).then(function () { flash("Saved."); })
      .catch(function (err) { flash(err.message, true); });
  });

  function copy(el) {
    var text = document.getElementById(el.getAttribute("data-copy")).textContent;
    var ok = function () { el.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(ok, function () { flash("Copy failed: select it", true); });
    } else {
      var r = document.createRange();
      r.selectNodeContents(document.getElementById(el.getAttribute("data-copy")));
      var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
      try { document.execCommand("copy"); ok(); } catch (e) { flash("Select and copy it", true); }
    }
  }

  function toggleTheme() {
    var root = document.documentElement;
    var dark = root.getAttribute("data-theme") === "dark" ||
      (!root.getAttribute("data-theme") && window.matchMedia("(prefers-color-scheme: dark)").matches);
    var next = dark ? "light" : "dark";
    root.setAttribute("data-theme", next);
    try { localStorage.setItem("oo8-theme", next); } catch (e) { /* storage off */ }
  }

  // parts of the page kept fresh: re-read this page and swap the element in
  function refresh(selector) {
    return fetch(location.href, { credentials: "same-origin" }).then(function (r) {
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.querySelectorAll(selector), now = document.querySelectorAll(selector);
      for (var i = 0; i < Math.min(fresh.length, now.length); i++) now[i].replaceWith(fresh[i]);
    }).catch(function () { /* next time */ });
  }
  if (document.getElementById("live")) setInterval(function () { refresh("#live"); }, 3000);
})();
