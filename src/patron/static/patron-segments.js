/* The no-code segment builder: nested AND/OR groups of conditions, edited as a tree of form
 * controls built from the catalogue the page embeds (condition types, their fields, the
 * operators each kind of value has, the stores, tags, tiers... to pick from). Every change
 * asks the JSON API for the live count and a sample (POST /api/v1/segments/preview, debounced);
 * a refused definition shows each message next to the condition it names. Saving posts the
 * same JSON to /api/v1/segments. Served by Patron itself: no CDN, no framework. */
(function () {
  "use strict";

  var PREVIEW = "/api/v1/segments/preview";
  var DEBOUNCE_MS = 350;

  function el(tag, attrs, kids) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else if (k === "cls") {
        node.className = attrs[k];
      } else { node.setAttribute(k, attrs[k]); }
    });
    (kids || []).forEach(function (kid) { if (kid) { node.appendChild(kid); } });
    return node;
  }

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function select(options, value, onChange, attrs) {
    var s = el("select", attrs || {});
    options.forEach(function (o) {
      var opt = el("option", {value: o[0], text: o[1]});
      if (String(o[0]) === String(value)) { opt.selected = true; }
      s.appendChild(opt);
    });
    s.addEventListener("change", function () { onChange(s.value); });
    return s;
  }

  function numberOrText(raw, numeric) {
    if (!numeric) { return raw; }
    var n = Number(raw);
    return raw === "" || isNaN(n) ? raw : n;
  }

  function Builder(root, catalog, definition, onChange) {
    this.root = root;
    this.catalog = catalog;
    this.types = {};
    var self = this;
    catalog.types.forEach(function (t) { self.types[t.type] = t; });
    this.definition = definition && definition.conditions ? definition :
      {match: "all", conditions: []};
    this.onChange = onChange;
    this.render();
  }

  Builder.prototype.L = function (key) { return this.catalog.labels[key] || key; };

  Builder.prototype.changed = function () { this.onChange(this.definition); };

  Builder.prototype.render = function () {
    this.root.innerHTML = "";
    this.root.appendChild(this.group(this.definition, "", null));
  };

  Builder.prototype.fresh = function (type) {
    var self = this;
    var spec = this.types[type];
    var node = {type: type};
    spec.params.forEach(function (p) {
      if (p.default !== undefined) { node[p.name] = p.default; return; }
      if (p.kind === "select") {
        var first = self.optionsOf(p, node)[0];
        node[p.name] = first ? first[0] : "";
      }
      if (p.kind === "multi") { node[p.name] = []; }
      if (p.kind === "numtest") { node.op = "gte"; node.value = 0; }
      if (p.kind === "number") { node[p.name] = 0; }
    });
    this.fixDependent(node);
    return node;
  };

  Builder.prototype.optionsOf = function (p, node) {
    if (p.depends) {
      return p.options_by[node[p.depends]] || [];
    }
    return p.options;
  };

  Builder.prototype.fixDependent = function (node) {
    // an operator that the newly picked field does not have falls back to its first one
    var self = this;
    this.types[node.type].params.forEach(function (p) {
      if (p.depends) {
        var opts = self.optionsOf(p, node).map(function (o) { return o[0]; });
        if (opts.length && opts.indexOf(node[p.name]) < 0) { node[p.name] = opts[0]; }
      }
    });
    this.fixValue(node);
  };

  Builder.prototype.valueShape = function (node) {
    var op = node.op;
    if (["is_set", "is_not_set", "is_true", "is_false"].indexOf(op) >= 0) { return "none"; }
    if (op === "between") { return "pair"; }
    if (op === "in" || op === "not_in") { return "list"; }
    return "one";
  };

  Builder.prototype.fixValue = function (node) {
    var spec = this.types[node.type];
    var hasValue = spec.params.some(function (p) { return p.kind === "value"; });
    if (!hasValue) { return; }
    var shape = this.valueShape(node);
    if (shape === "none") { delete node.value; return; }
    if (shape === "pair" && !Array.isArray(node.value)) { node.value = ["", ""]; }
    if (shape === "list" && !Array.isArray(node.value)) {
      node.value = node.value === undefined || node.value === "" ? [] : [node.value];
    }
    if (shape === "one" && (Array.isArray(node.value) || node.value === undefined)) {
      node.value = "";
    }
  };

  Builder.prototype.isNumeric = function (p, node) {
    var rule = p.numeric_when || {};
    return Object.keys(rule).some(function (k) { return rule[k].indexOf(node[k]) >= 0; });
  };

  Builder.prototype.group = function (group, path, parent) {
    var self = this;
    var box = el("div", {cls: "seg-group", "data-path": path || "root"});
    var head = el("div", {cls: "seg-group-head"});
    head.appendChild(select([["all", this.L("all")], ["any", this.L("any")]], group.match || "all",
      function (v) { group.match = v; self.changed(); }, {"class": "seg-match"}));
    var adder = select([["", this.L("add_condition")]].concat(this.catalog.types.map(
      function (t) { return [t.type, t.label]; })), "", function (v) {
      if (!v) { return; }
      group.conditions.push(self.fresh(v));
      self.render();
      self.changed();
    }, {"class": "seg-add-condition"});
    head.appendChild(adder);
    var addGroup = el("button", {type: "button", cls: "seg-add-group", text: this.L("add_group")});
    addGroup.addEventListener("click", function () {
      group.conditions.push({type: "group", match: "any", conditions: []});
      self.render();
      self.changed();
    });
    head.appendChild(addGroup);
    if (parent) { head.appendChild(this.removeButton(parent, group)); }
    box.appendChild(head);
    var list = el("div", {cls: "seg-items"});
    group.conditions.forEach(function (node, i) {
      var p = (path ? path + "." : "") + "conditions." + i;
      list.appendChild(node.type === "group" ? self.group(node, p, group) :
        self.condition(node, p, group));
    });
    if (!group.conditions.length) {
      list.appendChild(el("p", {cls: "muted", text: this.L(parent ? "empty_group" : "everyone")}));
    }
    box.appendChild(list);
    box.appendChild(el("small", {cls: "error seg-error"}));
    return box;
  };

  Builder.prototype.removeButton = function (parent, node) {
    var self = this;
    var b = el("button", {type: "button", cls: "seg-remove link", text: "✕",
                          title: this.L("remove")});
    b.addEventListener("click", function () {
      parent.conditions.splice(parent.conditions.indexOf(node), 1);
      self.render();
      self.changed();
    });
    return b;
  };

  Builder.prototype.condition = function (node, path, parent) {
    var self = this;
    var spec = this.types[node.type];
    var row = el("div", {cls: "seg-condition", "data-path": path, "data-type": node.type});
    row.appendChild(el("strong", {text: spec ? spec.label : node.type}));
    (spec ? spec.params : []).forEach(function (p) {
      row.appendChild(self.control(node, p));
    });
    row.appendChild(this.removeButton(parent, node));
    row.appendChild(el("small", {cls: "error seg-error"}));
    return row;
  };

  Builder.prototype.labelled = function (text, control) {
    return el("label", {cls: "seg-param"}, [el("span", {text: text}), control]);
  };

  Builder.prototype.control = function (node, p) {
    var self = this;
    var redraw = function () { self.render(); self.changed(); };
    if (p.kind === "select") {
      return this.labelled(p.label, select(this.optionsOf(p, node), node[p.name], function (v) {
        node[p.name] = v;
        self.fixDependent(node);
        redraw();
      }, {name: p.name}));
    }
    if (p.kind === "multi") {
      var box = el("span", {cls: "seg-multi", "data-name": p.name});
      this.optionsOf(p, node).forEach(function (o) {
        var cb = el("input", {type: "checkbox", value: o[0]});
        cb.checked = (node[p.name] || []).indexOf(o[0]) >= 0;
        cb.addEventListener("change", function () {
          var chosen = node[p.name] || [];
          if (cb.checked) { chosen.push(o[0]); } else { chosen.splice(chosen.indexOf(o[0]), 1); }
          node[p.name] = chosen;
          self.changed();
        });
        box.appendChild(el("label", {}, [cb, document.createTextNode(o[1])]));
      });
      return this.labelled(p.label, box);
    }
    if (p.kind === "number" || p.kind === "text") {
      var input = el("input", {type: p.kind === "number" ? "number" : "text", name: p.name,
                               step: "any", value: node[p.name] === undefined ? "" : node[p.name]});
      input.addEventListener("input", function () {
        node[p.name] = p.kind === "number" ? numberOrText(input.value, true) : input.value;
        if (p.optional && input.value === "") { delete node[p.name]; }
        self.changed();
      });
      return this.labelled(p.label, input);
    }
    if (p.kind === "list_text") {
      var text = el("input", {type: "text", name: p.name, placeholder: "A, B",
                              value: (node[p.name] || []).join(", ")});
      text.addEventListener("input", function () {
        var items = text.value.split(",").map(function (s) { return s.trim(); })
          .filter(Boolean);
        if (items.length) { node[p.name] = items; } else { delete node[p.name]; }
        self.changed();
      });
      return this.labelled(p.label, text);
    }
    if (p.kind === "numtest") {
      var wrap = el("span", {cls: "seg-numtest"});
      wrap.appendChild(select(this.catalog.number_ops, node.op, function (v) {
        node.op = v;
        if (v === "between" && !Array.isArray(node.value)) { node.value = [node.value, node.value]; }
        if (v !== "between" && Array.isArray(node.value)) { node.value = node.value[0]; }
        redraw();
      }, {name: "op"}));
      this.valueInputs(wrap, node, true);
      return wrap;
    }
    if (p.kind === "value") {
      var holder = el("span", {cls: "seg-value"});
      this.valueInputs(holder, node, this.isNumeric(p, node));
      return holder;
    }
    if (p.kind === "window") {
      return this.windowControl(node, p);
    }
    return el("span");
  };

  Builder.prototype.valueInputs = function (holder, node, numeric) {
    var self = this;
    var shape = node.op === "between" ? "pair" : this.valueShape(node);
    var type = numeric ? "number" : "text";
    if (shape === "none") { return; }
    if (shape === "pair") {
      [0, 1].forEach(function (i) {
        var inp = el("input", {type: type, step: "any", name: "value" + i,
                               value: Array.isArray(node.value) ? node.value[i] : ""});
        inp.addEventListener("input", function () {
          node.value[i] = numberOrText(inp.value, numeric);
          self.changed();
        });
        holder.appendChild(inp);
      });
      return;
    }
    if (shape === "list") {
      var many = el("input", {type: "text", name: "value", placeholder: "A, B",
                              value: (node.value || []).join(", ")});
      many.addEventListener("input", function () {
        node.value = many.value.split(",").map(function (s) { return s.trim(); })
          .filter(Boolean);
        self.changed();
      });
      holder.appendChild(many);
      return;
    }
    var one = el("input", {type: type, step: "any", name: "value",
                           value: node.value === undefined ? "" : node.value});
    one.addEventListener("input", function () {
      node.value = numberOrText(one.value, numeric);
      self.changed();
    });
    holder.appendChild(one);
  };

  Builder.prototype.windowControl = function (node, p) {
    var self = this;
    var w = node.window;
    var kind = !w ? "" : (w.last_days !== undefined ? "last" : "dates");
    var box = el("span", {cls: "seg-window"});
    box.appendChild(select([["", this.L("any_time")], ["last", this.L("last_days")],
                            ["dates", this.L("dates")]], kind, function (v) {
      if (!v) { delete node.window; }
      if (v === "last") { node.window = {last_days: 30}; }
      if (v === "dates") { node.window = {from: "", to: ""}; }
      self.render();
      self.changed();
    }, {name: "window"}));
    if (kind === "last") {
      var days = el("input", {type: "number", name: "last_days", value: w.last_days});
      days.addEventListener("input", function () {
        w.last_days = numberOrText(days.value, true);
        self.changed();
      });
      box.appendChild(days);
    }
    if (kind === "dates") {
      ["from", "to"].forEach(function (k) {
        var d = el("input", {type: "date", name: "window_" + k, value: w[k] || ""});
        d.addEventListener("input", function () { w[k] = d.value; self.changed(); });
        box.appendChild(d);
      });
    }
    return this.labelled(p.label, box);
  };

  Builder.prototype.showErrors = function (fields) {
    Array.prototype.forEach.call(this.root.querySelectorAll(".seg-error"), function (e) {
      e.textContent = "";
    });
    Array.prototype.forEach.call(this.root.querySelectorAll(".invalid"), function (e) {
      e.classList.remove("invalid");
    });
    var root = this.root;
    (fields || []).forEach(function (f) {
      var path = (f.field || "").replace(/^definition\.?/, "");
      var parts = path.split(".");
      var target = null;
      while (parts.length && !target) {
        var p = parts.join(".") || "root";
        target = root.querySelector('[data-path="' + p + '"]');
        parts.pop();
      }
      target = target || root.querySelector('[data-path="root"]');
      target.classList.add("invalid");
      var slot = target.querySelector(":scope > .seg-error");
      if (slot) { slot.textContent = (slot.textContent ? slot.textContent + " " : "") + f.message; }
    });
  };

  function money(v) {
    return v === null || v === undefined ? "–" : "¥" + Number(v).toFixed(2);
  }

  function start(page) {
    var catalog = readJson("segment-catalog");
    var initial = readJson("segment-definition");
    var countEl = document.getElementById("segment-count");
    var sampleEl = document.getElementById("segment-sample");
    var jsonEl = document.getElementById("segment-json");
    var statusEl = document.getElementById("segment-status");
    var asOfEl = document.getElementById("segment-as-of");
    var timer = null;

    // Counted on the audience replica: say how old its data are (local time of the stores).
    function showAsOf(asOf) {
      if (!asOfEl) { return; }
      if (!asOf) { asOfEl.hidden = true; asOfEl.textContent = ""; return; }
      var time = new Date(asOf).toLocaleTimeString(document.documentElement.lang || undefined,
        {hour: "2-digit", minute: "2-digit", hour12: false, timeZone: catalog.timezone});
      asOfEl.textContent = catalog.labels.as_of + " " + time;
      asOfEl.setAttribute("data-as-of", asOf);
      asOfEl.hidden = false;
    }
    var seq = 0;

    function preview(definition) {
      var mine = ++seq;
      statusEl.textContent = catalog.labels.counting;
      fetch(PREVIEW, {method: "POST", credentials: "same-origin",
                      headers: {"Content-Type": "application/json", "Accept": "application/json"},
                      body: JSON.stringify({definition: definition, limit: 10})})
        .then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
        .then(function (res) {
          if (mine !== seq) { return; }
          var status = res[0], body = res[1];
          if (status !== 200) {
            statusEl.textContent = body.error ? body.error.message : String(status);
            countEl.textContent = "–";
            showAsOf(null);
            builder.showErrors(body.error ? body.error.fields : []);
            page.setAttribute("data-state", "invalid");
            return;
          }
          builder.showErrors([]);
          statusEl.textContent = "";
          countEl.textContent = Number(body.count).toLocaleString();
          countEl.setAttribute("data-count", body.count);
          showAsOf(body.as_of);
          sampleEl.innerHTML = "";
          body.sample.forEach(function (c) {
            var link = el("a", {href: "/customers/" + c.id, text: c.name || ("#" + c.id)});
            sampleEl.appendChild(el("tr", {}, [el("td", {}, [link]),
              el("td", {text: c.phone || "–"}), el("td", {text: c.member_code || "–"}),
              el("td", {cls: "num", text: String(c.order_count)}),
              el("td", {cls: "num", text: money(c.net_spend)})]));
          });
          page.setAttribute("data-state", "ready");
        })
        .catch(function (err) { statusEl.textContent = String(err); });
    }

    function changed(definition) {
      jsonEl.value = JSON.stringify(definition, null, 2);
      page.setAttribute("data-state", "pending");
      clearTimeout(timer);
      timer = setTimeout(function () { preview(definition); }, DEBOUNCE_MS);
    }

    var builder = new Builder(document.getElementById("segment-builder"), catalog, initial,
                              changed);
    jsonEl.value = JSON.stringify(builder.definition, null, 2);
    var apply = document.getElementById("segment-json-apply");
    if (apply) {
      apply.addEventListener("click", function () {
        try {
          builder.definition = JSON.parse(jsonEl.value);
          builder.render();
          changed(builder.definition);
        } catch (err) { statusEl.textContent = String(err); }
      });
    }
    var save = document.getElementById("segment-save");
    if (save) {
      save.addEventListener("click", function () {
        var id = page.getAttribute("data-segment-id");
        var body = {name: document.getElementById("segment-name").value,
                    description: document.getElementById("segment-description").value || null,
                    definition: builder.definition};
        fetch(id ? "/api/v1/segments/" + id : "/api/v1/segments", {
          method: id ? "PATCH" : "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json", "Accept": "application/json"},
          body: JSON.stringify(body)})
          .then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
          .then(function (res) {
            if (res[0] === 200 || res[0] === 201) {
              window.location = "/segments/" + res[1].id + "?saved=1";
              return;
            }
            var err = res[1].error || {};
            statusEl.textContent = err.message || String(res[0]);
            builder.showErrors((err.fields || []).filter(function (f) {
              return f.field.indexOf("definition") === 0;
            }));
            var nameErr = (err.fields || []).filter(function (f) { return f.field === "name"; });
            document.getElementById("segment-name-error").textContent =
              nameErr.length ? nameErr[0].message : "";
          });
      });
    }
    preview(builder.definition);
  }

  // Other editors (automation conditions, campaign audiences) embed the same builder.
  window.PatronSegmentBuilder = Builder;

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.getElementById("segment-page");
    if (page) { start(page); }
  });
})();
