// The dashboard's script: polls its sections, pages the runs, asks before promote and roll back.
(() => {
  if (!CONFIG.model) return;
  const api = `${CONFIG.base}/api/models/${encodeURIComponent(CONFIG.model)}`;
  let fingerprint = CONFIG.fingerprint, runsOffset = 0, runsStatus = '', driftCycle = null, busy = false;
  // what each section shows (a digest of its HTML): the server sends only the sections that differ
  let digests = CONFIG.digests || {};
  const live = document.getElementById('live');

  function openDetails() {
    return new Set([...document.querySelectorAll('details[open]')].map(d => d.id || d.querySelector('summary')?.textContent));
  }
  function reopen(open) {
    document.querySelectorAll('details').forEach(d => {
      if (open.has(d.id || d.querySelector('summary')?.textContent)) d.open = true;
    });
  }
  async function refresh(force) {
    if (busy) return;
    busy = true;
    try {
      const q = new URLSearchParams({runs_offset: runsOffset, runs_status: runsStatus});
      if (!force && fingerprint) q.set('since', fingerprint);
      q.set('have', Object.entries(digests).map(([id, d]) => `${id}:${d}`).join(','));
      if (driftCycle !== null) q.set('drift_cycle', driftCycle);
      const r = await fetch(`${api}/sections?${q}`, {credentials: 'same-origin', cache: 'no-store'});
      if (!r.ok) { live.textContent = `not updated (${r.status})`; live.className = 'note stale'; return; }
      const got = await r.json();
      if (!got.unchanged) {
        const open = openDetails();
        for (const [id, body] of Object.entries(got.sections)) {
          const el = document.querySelector(`[data-section="${id}"]`);
          if (el) el.innerHTML = body;
        }
        reopen(open);
        fingerprint = got.fingerprint;
        digests = got.digests || {};
      }
      live.textContent = `live · checked ${new Date().toLocaleTimeString()}`;
      live.className = 'note live-dot';
    } catch (err) {
      live.textContent = 'not updated (server unreachable)'; live.className = 'note stale';
    } finally { busy = false; }
  }
  document.addEventListener('click', ev => {
    const pager = ev.target.closest('.pager button');
    if (pager) { runsOffset = Number(pager.dataset.offset); refresh(true); return; }
    const act = ev.target.closest('.actions button');
    if (act) { ask(act.dataset.action, act.closest('.actions')); }
  });
  document.addEventListener('change', ev => {
    if (ev.target.matches('.only-failed')) { runsStatus = ev.target.checked ? 'failed' : ''; runsOffset = 0; refresh(true); }
    if (ev.target.matches('.drift-cycle')) { driftCycle = ev.target.value; refresh(true); }
  });

  const dialog = document.getElementById('confirm');
  const form = document.getElementById('confirm-form');
  let pending = null;
  function ask(action, box) {
    const version = box.querySelector('select[name=version]').value;
    pending = {action, box, version};
    document.getElementById('confirm-title').textContent =
      action === 'promote' ? `Promote v${version} of ${CONFIG.model} to champion` : `Roll back ${CONFIG.model}`;
    document.getElementById('confirm-what').textContent = action === 'promote'
      ? 'The champion alias moves to this version at once; serving replicas follow at their next poll.'
      : 'Aborts the live rollout if there is one, else moves the champion back to the previous one.';
    document.getElementById('confirm-result').textContent = '';
    form.reset();
    dialog.showModal();
  }
  document.getElementById('confirm-cancel').addEventListener('click', () => dialog.close());
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    if (!pending) return;
    const reason = form.reason.value.trim(), token = form.token.value;
    const body = pending.action === 'promote' ? {version: Number(pending.version), reason} : {reason};
    const out = document.getElementById('confirm-result');
    out.textContent = 'sending...';
    let text;
    try {
      const r = await fetch(`/admin/models/${encodeURIComponent(CONFIG.model)}/${pending.action}`, {
        method: 'POST', headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
        body: JSON.stringify(body)});
      const got = await r.json().catch(() => ({}));
      text = r.ok ? `done: ${summarize(got)}` : `refused (${r.status}): ${got.error || r.statusText}`;
    } catch (err) { text = `failed: ${err}`; }
    out.textContent = text;
    pending.box.querySelector('output.result').textContent = text;
    refresh(true);
  });
  function summarize(got) {
    const parts = [];
    for (const k of ['action', 'alias', 'from_version', 'to_version', 'version', 'scope', 'outcome']) {
      if (got[k] !== undefined && got[k] !== null) parts.push(`${k} ${got[k]}`);
    }
    return parts.join(', ') || JSON.stringify(got);
  }
  setInterval(() => refresh(false), CONFIG.poll * 1000);
})();
