// weir dashboard: every 2 s, replaces the page's live part (<main id="live">)
// with the server's fresh rendering of it (`?part=live`); on a worker run
// with --http-admin, sends the cancel and rescale buttons' requests.
// No library, no CDN: this file is compiled into the worker binary.
(function () {
  'use strict';
  var live = document.getElementById('live');
  var stamp = document.getElementById('updated');
  var banner = document.getElementById('banner');
  if (!live) return;
  var every = Number(live.dataset.poll) || 2000;
  var busy = false;

  function say(text, bad) {
    banner.hidden = !text;
    banner.textContent = text || '';
    banner.className = bad ? 'bad' : '';
  }

  function refresh() {
    if (busy) return;
    busy = true;
    fetch(location.pathname + '?part=live', { cache: 'no-store' })
      .then(function (r) {
        return r.text().then(function (html) {
          live.innerHTML = html;
          if (r.ok) {
            if (banner.className === 'bad') say('');
          } else {
            say('HTTP ' + r.status + ': the cluster could not be read', true);
          }
          stamp.textContent = new Date().toISOString().substring(11, 19) + ' UTC';
        });
      })
      .catch(function (e) {
        say('this worker does not answer (' + e + '); retrying', true);
      })
      .then(function () { busy = false; });
  }

  setInterval(refresh, every);

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest('button[data-action]');
    if (!b) return;
    var job = b.dataset.job;
    var body = {};
    if (b.dataset.action === 'rescale') {
      var n = window.prompt('New parallelism for job ' + job, b.dataset.parallelism);
      if (n === null) return;
      body = { parallelism: Number(n) };
    } else if (!window.confirm('Cancel job ' + job + '? Its tasks stop and its state in ZooKeeper is removed.')) {
      return;
    }
    fetch('/api/jobs/' + encodeURIComponent(job) + '/' + b.dataset.action, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body)
    })
      .then(function (r) {
        return r.text().then(function (t) { say((r.ok ? 'done: ' : 'refused: ') + t, !r.ok); });
      })
      .catch(function (e) { say('request failed: ' + e, true); })
      .then(refresh);
  });
})();
