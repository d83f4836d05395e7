/* The automation editor: a trigger with its parameters, conditions from the embedded segment
 * builder (patron-segments.js), steps as an ordered list of actions and waits (or A/B variants
 * of them), the re-entry period and the control group. Every click rewrites the hidden
 * "definition" field of the page's form with the JSON the API accepts; the form itself is a
 * plain POST (CSRF token, save or dry run). Refusals the server sends back are placed next to
 * the control their path names. Served by Patron itself: no CDN, no framework. */
(function () {
  "use strict";

  var PREVIEW = "/api/v1/segments/preview";

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

  function copy(value) { return JSON.parse(JSON.stringify(value)); }

  function percentOf(share) {
    var n = Number(share || 0) * 100;
    return isNaN(n) ? String(share) : String(parseFloat(n.toFixed(4)));
  }

  function shareOf(percent) {
    var raw = String(percent).trim();
    var n = Number(raw);
    if (raw === "" || isNaN(n)) { return raw; }
    return String(parseFloat((n / 100).toFixed(6)));
  }

  function intOrRaw(raw) {
    var text = String(raw).trim();
    return /^-?\d+$/.test(text) ? parseInt(text, 10) : text;
  }

  function errorSlot(path) {
    return el("small", {cls: "error ae-error", "data-error-for": path});
  }

  function Editor(catalog, definition, onChange) {
    this.catalog = catalog;
    this.onChange = onChange;
    this.triggers = {};
    this.actions = {};
    var self = this;
    catalog.triggers.forEach(function (t) { self.triggers[t.type] = t; });
    catalog.actions.forEach(function (a) { self.actions[a.action] = a; });
    var d = definition || {};
    this.trigger = d.trigger || this.fresh(this.triggers.first_purchase, "type",
                                           "first_purchase");
    this.condOn = !!d.conditions;
    this.conditions = d.conditions || {match: "all", conditions: []};
    if (d.variants) {
      this.ab = true;
      this.arms = d.variants.map(function (v) {
        return {code: v.code, pct: percentOf(v.share), steps: v.steps || []};
      });
    } else {
      this.ab = false;
      this.arms = [{code: "A", pct: "50", steps: d.steps || []}];
    }
    this.reentryEvery = d.reentry_days !== null && d.reentry_days !== undefined;
    this.reentryDays = this.reentryEvery ? d.reentry_days : 30;
    this.controlPct = percentOf(d.control_share || 0);
    this.errors = {};
  }

  Editor.prototype.L = function (key) { return this.catalog.labels[key] || key; };

  Editor.prototype.fresh = function (spec, key, value) {
    var node = {};
    node[key] = value;
    spec.params.forEach(function (p) {
      if (p.default !== undefined) { node[p.name] = p.default; return; }
      if (p.kind === "select" && !p.optional && p.options.length) {
        node[p.name] = p.numeric ? Number(p.options[0][0]) : p.options[0][0];
      }
      if (p.kind === "segment") { node[p.name] = {match: "all", conditions: []}; }
    });
    return node;
  };

  Editor.prototype.definition = function () {
    var hasConditions = this.condOn && this.conditions.conditions &&
      this.conditions.conditions.length > 0;
    var d = {trigger: this.trigger, conditions: hasConditions ? this.conditions : null,
             reentry_days: this.reentryEvery ? intOrRaw(this.reentryDays) : null,
             control_share: shareOf(this.controlPct)};
    if (this.ab) {
      d.variants = this.arms.map(function (a) {
        return {code: a.code, share: shareOf(a.pct), steps: a.steps};
      });
    } else {
      d.steps = this.arms[0].steps;
    }
    return d;
  };

  Editor.prototype.changed = function () { this.onChange(this.definition()); };

  // --- one parameter of a trigger or a step --------------------------------------------------

  Editor.prototype.param = function (node, p, path) {
    var self = this;
    var wrap = el("label", {cls: "ae-param", "data-param": p.name});
    wrap.appendChild(el("span", {text: p.label}));
    var control;
    if (p.kind === "select") {
      control = el("select", {});
      var options = (p.optional ? [["", this.L("none")]] : []).concat(p.options);
      options.forEach(function (o) {
        var opt = el("option", {value: o[0], text: o[1]});
        if (node[p.name] !== undefined && node[p.name] !== null &&
            String(node[p.name]) === String(o[0])) { opt.selected = true; }
        control.appendChild(opt);
      });
      control.addEventListener("change", function () {
        if (control.value === "") { delete node[p.name]; } else {
          node[p.name] = p.numeric ? Number(control.value) : control.value;
        }
        self.changed();
      });
    } else if (p.kind === "segment") {
      control = el("div", {cls: "ae-segment"});
      if (!node[p.name]) { node[p.name] = {match: "all", conditions: []}; }
      this.embedBuilder(control, node[p.name], function (def) {
        node[p.name] = def;
        self.changed();
      }, path + "." + p.name);
      wrap = el("div", {cls: "ae-param ae-wide", "data-param": p.name},
                [el("span", {text: p.label}), control, errorSlot(path + "." + p.name)]);
      return wrap;
    } else if (p.kind === "json") {
      // a JSON object sent as it is (a webhook step's data); text that is not JSON goes to the
      // server as typed, which refuses it beside this field
      var shown = node[p.name] === undefined ? "" :
        (typeof node[p.name] === "string" ? node[p.name] : JSON.stringify(node[p.name], null, 1));
      control = el("textarea", {rows: "3", cls: "ae-json"});
      control.value = shown === "{}" ? "" : shown;
      if (p.hint) { control.setAttribute("placeholder", p.hint); }
      control.addEventListener("input", function () {
        var v = control.value.trim();
        if (v === "") { delete node[p.name]; } else {
          try { node[p.name] = JSON.parse(v); } catch (e) { node[p.name] = v; }
        }
        self.changed();
      });
      wrap.classList.add("ae-wide");
    } else {
      control = el("input", {type: p.kind === "int" ? "number" : "text",
                             value: node[p.name] === undefined ? "" : node[p.name]});
      if (p.kind === "decimal") { control.setAttribute("inputmode", "decimal"); }
      if (p.hint) { control.setAttribute("title", p.hint); control.setAttribute("placeholder", p.hint); }
      control.addEventListener("input", function () {
        var v = control.value;
        if (v.trim() === "") { delete node[p.name]; } else {
          node[p.name] = p.kind === "int" ? intOrRaw(v) : v;
        }
        self.changed();
      });
    }
    wrap.appendChild(control);
    wrap.appendChild(errorSlot(path + "." + p.name));
    return wrap;
  };

  Editor.prototype.embedBuilder = function (holder, definition, onChange, errorPath) {
    var Builder = window.PatronSegmentBuilder;
    if (!Builder) { return null; }
    var box = el("div", {cls: "ae-builder"});
    holder.appendChild(box);
    var builder = new Builder(box, this.catalog.segments, definition, onChange);
    this.builders = this.builders || [];
    this.builders.push({path: errorPath, builder: builder});
    return builder;
  };

  // --- the sections ----------------------------------------------------------------------------

  Editor.prototype.renderTrigger = function (root) {
    var self = this;
    root.innerHTML = "";
    var pick = el("select", {id: "trigger-type"});
    this.catalog.triggers.forEach(function (t) {
      var opt = el("option", {value: t.type, text: t.label});
      if (t.type === self.trigger.type) { opt.selected = true; }
      pick.appendChild(opt);
    });
    pick.addEventListener("change", function () {
      self.trigger = self.fresh(self.triggers[pick.value], "type", pick.value);
      self.render();
      self.changed();
    });
    var row = el("div", {cls: "ae-row", id: "trigger-params"}, [pick]);
    var spec = this.triggers[this.trigger.type];
    (spec ? spec.params : []).forEach(function (p) {
      row.appendChild(self.param(self.trigger, p, "definition.trigger"));
    });
    root.appendChild(row);
    root.appendChild(errorSlot("definition.trigger"));
  };

  Editor.prototype.renderConditions = function (root) {
    var self = this;
    root.innerHTML = "";
    var on = el("input", {type: "checkbox", id: "conditions-on"});
    on.checked = this.condOn;
    on.addEventListener("change", function () {
      self.condOn = on.checked;
      self.render();
      self.changed();
    });
    root.appendChild(el("label", {cls: "ae-check"}, [on, document.createTextNode(
      " " + this.L("conditions_on"))]));
    if (!this.condOn) {
      root.appendChild(el("p", {cls: "muted", text: this.L("everyone")}));
      root.appendChild(errorSlot("definition.conditions"));
      return;
    }
    var saved = this.catalog.saved_segments || {};
    var ids = Object.keys(saved);
    if (ids.length) {
      var load = el("select", {id: "load-segment"});
      load.appendChild(el("option", {value: "", text: this.L("load_segment")}));
      ids.forEach(function (id) {
        load.appendChild(el("option", {value: id, text: saved[id].name}));
      });
      load.addEventListener("change", function () {
        if (!load.value) { return; }
        self.conditions = copy(saved[load.value].definition);
        self.render();
        self.changed();
      });
      root.appendChild(load);
    }
    root.appendChild(el("span", {cls: "muted ae-count"}, [
      document.createTextNode(this.L("customers") + ": "),
      el("strong", {id: "conditions-count", text: "…"})]));
    var box = el("div", {id: "conditions-builder"});
    root.appendChild(box);
    this.embedBuilder(box, this.conditions, function (def) {
      self.conditions = def;
      self.changed();
      self.countLater();
    }, "definition.conditions");
    root.appendChild(errorSlot("definition.conditions"));
    this.countLater();
  };

  Editor.prototype.countLater = function () {
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () {
      var out = document.getElementById("conditions-count");
      if (!out) { return; }
      fetch(PREVIEW, {method: "POST", credentials: "same-origin",
                      headers: {"Content-Type": "application/json", "Accept": "application/json"},
                      body: JSON.stringify({definition: self.conditions, limit: 1})})
        .then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
        .then(function (res) {
          out.textContent = res[0] === 200 ? Number(res[1].count).toLocaleString() : "–";
        })
        .catch(function () { out.textContent = "–"; });
    }, 400);
  };

  Editor.prototype.renderSteps = function (root) {
    var self = this;
    root.innerHTML = "";
    var ab = el("input", {type: "checkbox", id: "variants-on"});
    ab.checked = this.ab;
    ab.addEventListener("change", function () {
      self.ab = ab.checked;
      if (self.ab && self.arms.length < 2) {
        self.arms[0].pct = "50";
        self.arms.push({code: "B", pct: "50", steps: copy(self.arms[0].steps)});
      }
      self.render();
      self.changed();
    });
    root.appendChild(el("label", {cls: "ae-check"}, [ab, document.createTextNode(
      " " + this.L("variants"))]));
    var arms = this.ab ? this.arms : [this.arms[0]];
    arms.forEach(function (arm, i) { root.appendChild(self.renderArm(arm, i)); });
    if (this.ab) {
      var more = el("button", {type: "button", id: "add-variant", text: this.L("add_variant")});
      more.addEventListener("click", function () {
        var code = String.fromCharCode(65 + self.arms.length);
        self.arms.push({code: code, pct: "0", steps: copy(self.arms[0].steps)});
        self.render();
        self.changed();
      });
      root.appendChild(more);
      root.appendChild(errorSlot("definition.variants"));
    }
  };

  Editor.prototype.renderArm = function (arm, i) {
    var self = this;
    var prefix = this.ab ? "definition.variants." + i : "definition";
    var box = el("div", {cls: "ae-arm", "data-arm": String(i)});
    if (this.ab) {
      var code = el("input", {type: "text", value: arm.code, size: "6", "data-field": "arm-code"});
      code.addEventListener("input", function () { arm.code = code.value; self.changed(); });
      var pct = el("input", {type: "text", inputmode: "decimal", value: arm.pct, size: "5",
                             "data-field": "arm-share"});
      pct.addEventListener("input", function () { arm.pct = pct.value; self.changed(); });
      var head = el("div", {cls: "ae-row ae-arm-head"}, [
        el("strong", {text: this.L("arm")}), code, errorSlot(prefix + ".code"),
        el("span", {text: this.L("share")}), pct, el("span", {text: "%"}),
        errorSlot(prefix + ".share")]);
      if (this.arms.length > 2) {
        var drop = el("button", {type: "button", cls: "link", text: "✕", title: this.L("remove")});
        drop.addEventListener("click", function () {
          self.arms.splice(i, 1);
          self.render();
          self.changed();
        });
        head.appendChild(drop);
      }
      box.appendChild(head);
    }
    var list = el("ol", {cls: "ae-steps"});
    arm.steps.forEach(function (step, j) {
      list.appendChild(self.renderStep(arm, step, j, prefix + ".steps." + j));
    });
    if (!arm.steps.length) { list.appendChild(el("li", {cls: "muted", text: this.L("no_steps")})); }
    box.appendChild(list);
    var add = el("select", {cls: "ae-add-step"});
    add.appendChild(el("option", {value: "", text: this.L("add_step")}));
    this.catalog.actions.forEach(function (a) {
      add.appendChild(el("option", {value: a.action, text: a.label}));
    });
    add.addEventListener("change", function () {
      if (!add.value) { return; }
      arm.steps.push(self.fresh(self.actions[add.value], "action", add.value));
      self.render();
      self.changed();
    });
    box.appendChild(add);
    box.appendChild(errorSlot(prefix + ".steps"));
    return box;
  };

  Editor.prototype.renderStep = function (arm, step, j, path) {
    var self = this;
    var spec = this.actions[step.action];
    var item = el("li", {cls: "ae-step" + (step.action === "wait" ? " ae-wait" : ""),
                         "data-step": String(j), "data-action": step.action});
    var row = el("div", {cls: "ae-row"}, [el("strong", {text: spec ? spec.label : step.action})]);
    (spec ? spec.params : []).forEach(function (p) { row.appendChild(self.param(step, p, path)); });
    var move = function (delta) {
      var k = j + delta;
      if (k < 0 || k >= arm.steps.length) { return; }
      arm.steps.splice(j, 1);
      arm.steps.splice(k, 0, step);
      self.render();
      self.changed();
    };
    var up = el("button", {type: "button", cls: "small ae-up", text: "↑", title: this.L("move_up")});
    up.addEventListener("click", function () { move(-1); });
    var down = el("button", {type: "button", cls: "small ae-down", text: "↓",
                             title: this.L("move_down")});
    down.addEventListener("click", function () { move(1); });
    var drop = el("button", {type: "button", cls: "small ae-remove", text: "✕",
                             title: this.L("remove")});
    drop.addEventListener("click", function () {
      arm.steps.splice(j, 1);
      self.render();
      self.changed();
    });
    row.appendChild(el("span", {cls: "ae-tools"}, [up, down, drop]));
    item.appendChild(row);
    item.appendChild(errorSlot(path));
    return item;
  };

  Editor.prototype.renderGuards = function (root) {
    var self = this;
    root.innerHTML = "";
    var every = el("input", {type: "checkbox", id: "reentry-every"});
    every.checked = this.reentryEvery;
    every.addEventListener("change", function () {
      self.reentryEvery = every.checked;
      self.render();
      self.changed();
    });
    var days = el("input", {type: "number", id: "reentry-days", value: this.reentryDays,
                            min: "0"});
    days.disabled = !this.reentryEvery;
    days.addEventListener("input", function () { self.reentryDays = days.value; self.changed(); });
    var control = el("input", {type: "text", inputmode: "decimal", id: "control-share",
                               value: this.controlPct, size: "5"});
    control.addEventListener("input", function () {
      self.controlPct = control.value;
      self.changed();
    });
    root.appendChild(el("div", {cls: "ae-row"}, [
      el("label", {cls: "ae-check"}, [every, document.createTextNode(" " +
        this.catalog.labels.reentry_every)]),
      days, el("span", {text: this.catalog.labels.days}),
      errorSlot("definition.reentry_days")]));
    root.appendChild(el("div", {cls: "ae-row"}, [
      el("span", {text: this.catalog.labels.control}), control, el("span", {text: "%"}),
      errorSlot("definition.control_share")]));
  };

  Editor.prototype.render = function () {
    this.builders = [];
    this.renderTrigger(document.getElementById("trigger-editor"));
    this.renderConditions(document.getElementById("conditions-editor"));
    this.renderSteps(document.getElementById("steps-editor"));
    this.renderGuards(document.getElementById("guards-editor"));
    this.showErrors(this.errors);
  };

  // --- refusals next to their controls -------------------------------------------------------

  Editor.prototype.showErrors = function (errors) {
    var general = document.getElementById("automation-errors");
    general.innerHTML = "";
    Array.prototype.forEach.call(document.querySelectorAll(".ae-error"), function (e) {
      e.textContent = "";
    });
    var builders = this.builders || [];
    var perBuilder = builders.map(function () { return []; });
    Object.keys(errors || {}).forEach(function (path) {
      var message = errors[path];
      for (var b = 0; b < builders.length; b++) {
        var at = builders[b].path;
        if (path === at || path.indexOf(at + ".") === 0) {
          perBuilder[b].push({field: "definition" + path.slice(at.length), message: message});
          return;
        }
      }
      var parts = path.split(".");
      while (parts.length) {
        var slot = document.querySelector('.ae-error[data-error-for="' + parts.join(".") + '"]');
        if (slot) {
          slot.textContent = (slot.textContent ? slot.textContent + " " : "") + message;
          var holder = slot.closest(".ae-param, .ae-step, .ae-arm, section");
          if (holder) { holder.classList.add("invalid"); }
          return;
        }
        parts.pop();
      }
      general.appendChild(el("div", {cls: "alert error", text: path + ": " + message}));
    });
    builders.forEach(function (b, i) { b.builder.showErrors(perBuilder[i]); });
  };

  function start(form) {
    var catalog = readJson("automation-catalog");
    catalog.labels.reentry_every = form.getAttribute("data-reentry-label");
    catalog.labels.days = form.getAttribute("data-days-label");
    catalog.labels.control = form.getAttribute("data-control-label");
    var field = document.getElementById("definition-field");
    var json = document.getElementById("definition-json");
    var editor = new Editor(catalog, readJson("automation-definition"), function (d) {
      field.value = JSON.stringify(d);
      if (json) { json.value = JSON.stringify(d, null, 2); }
    });
    editor.errors = readJson("automation-errors-data") || {};
    editor.render();
    editor.changed();
    form.setAttribute("data-state", "ready");
  }

  // The campaign form: its audience is the same segment builder, written into the form's
  // hidden "segment" field (no condition: every active member of the program).
  function startCampaign(form) {
    var catalog = readJson("campaign-segment-catalog");
    var field = document.getElementById("segment-field");
    var holder = document.getElementById("campaign-segment-editor");
    var initial = readJson("campaign-segment") || {match: "all", conditions: []};
    var errors = readJson("campaign-segment-errors") || {};
    var Builder = window.PatronSegmentBuilder;
    var builder = null;
    var timer = null;
    var count = el("strong", {id: "segment-count", text: "…"});

    function sync(definition) {
      field.value = definition && definition.conditions && definition.conditions.length ?
        JSON.stringify(definition) : "";
      clearTimeout(timer);
      timer = setTimeout(function () {
        fetch(PREVIEW, {method: "POST", credentials: "same-origin",
                        headers: {"Content-Type": "application/json",
                                  "Accept": "application/json"},
                        body: JSON.stringify({definition: definition, limit: 1})})
          .then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
          .then(function (res) {
            count.textContent = res[0] === 200 ? Number(res[1].count).toLocaleString() : "–";
          })
          .catch(function () { count.textContent = "–"; });
      }, 400);
    }

    var saved = catalog.saved_segments || {};
    var ids = Object.keys(saved);
    if (ids.length) {
      var load = el("select", {id: "load-segment"});
      load.appendChild(el("option", {value: "", text: catalog.labels.load_segment}));
      ids.forEach(function (id) {
        load.appendChild(el("option", {value: id, text: saved[id].name}));
      });
      load.addEventListener("change", function () {
        if (!load.value || !builder) { return; }
        builder.definition = copy(saved[load.value].definition);
        builder.render();
        sync(builder.definition);
      });
      holder.appendChild(load);
    }
    holder.appendChild(el("span", {cls: "muted ae-count"}, [
      document.createTextNode(catalog.labels.customers + ": "), count]));
    var box = el("div", {id: "campaign-segment-builder"});
    holder.appendChild(box);
    if (Builder) {
      builder = new Builder(box, catalog.segments, initial, sync);
      var fields = Object.keys(errors).map(function (path) {
        return {field: "definition" + path.slice("segment".length), message: errors[path]};
      });
      builder.showErrors(fields);
      sync(builder.definition);
    }
    form.setAttribute("data-state", "ready");
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("automation-form");
    if (form) { start(form); }
    var campaign = document.getElementById("campaign-form");
    if (campaign) { startCampaign(campaign); }
  });
})();
