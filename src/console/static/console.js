// event-worker console: copy buttons, local times, and the overview's live refresh.
// No inline script (the CSP allows only this file); text is set with textContent only.
(function () {
  'use strict';

  function localTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      var d = new Date(t.getAttribute('datetime'));
      if (isNaN(d.getTime())) { return; }
      var next = t.nextElementSibling;
      if (!next || !next.classList.contains('local')) {
        next = document.createElement('span');
        next.className = 'local';
        t.after(next);
      }
      next.textContent = '(local ' + d.toLocaleString() + ')';
    });
  }

  function copyButtons() {
    document.querySelectorAll('button.copy[data-copy]').forEach(function (b) {
      b.addEventListener('click', function () {
        var text = b.getAttribute('data-copy');
        var done = function () { b.textContent = 'Copied'; setTimeout(function () { b.textContent = 'Copy'; }, 1500); };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(done, function () { b.textContent = 'Copy failed'; });
        } else {
          b.textContent = 'Copy failed';
        }
      });
    });
  }

  var last = null;

  function rates(values) {
    var now = Date.now();
    if (last) {
      var secs = (now - last.at) / 1000;
      document.querySelectorAll('[data-rate]').forEach(function (el) {
        var k = el.getAttribute('data-rate');
        var a = Number(last.values[k]), b = Number(values[k]);
        if (secs > 0 && !isNaN(a) && !isNaN(b)) { el.textContent = ((b - a) / secs).toFixed(2); }
      });
    }
    last = { at: now, values: values };
  }

  function list(id, items, render) {
    var ul = document.getElementById(id);
    if (!ul) { return; }
    ul.replaceChildren();
    items.forEach(function (item) {
      var li = document.createElement('li');
      li.textContent = render(item);
      ul.appendChild(li);
    });
  }

  function refresh() {
    fetch('/ui/overview.json', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (r.redirected || r.status === 401) { window.location.href = '/ui/login?next=/ui'; return null; }
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      })
      .then(function (body) {
        if (!body) { return; }
        var values = body.values || {};
        document.querySelectorAll('[data-k]').forEach(function (el) {
          var k = el.getAttribute('data-k');
          if (Object.prototype.hasOwnProperty.call(values, k)) {
            el.textContent = values[k];
            if (el.tagName === 'TIME') { el.setAttribute('datetime', values[k]); }
          }
        });
        list('warnings', body.warnings || [], function (w) { return w; });
        var none = document.getElementById('no-warnings');
        if (none) { none.hidden = (body.warnings || []).length > 0; }
        list('instances', body.instances || [], function (i) { return i.group + ' / ' + i.consumer; });
        rates(values);
        localTimes(document);
        var live = document.getElementById('live');
        if (live) { live.textContent = '· live'; }
        window.__consoleRefreshes = (window.__consoleRefreshes || 0) + 1;
      })
      .catch(function (e) {
        var live = document.getElementById('live');
        if (live) { live.textContent = '· refresh failed (' + e.message + '), retrying'; }
      });
  }

  document.addEventListener('DOMContentLoaded', function () {
    localTimes(document);
    copyButtons();
    if (document.getElementById('types')) {
      refresh();
      setInterval(refresh, 3000);
    }
  });
}());
