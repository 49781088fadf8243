// The cluster (administrators only): nodes, leader, term, and this node's readiness.

import { api } from '../api.js';
import { h, replace, table } from '../dom.js';
import { count } from '../format.js';

export const POLL_MS = 5000;

function stat(label, value, attrs = {}) {
  return h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value', ...attrs }, value));
}

export async function render(ctx) {
  const healthBox = h('div', { class: 'grid', 'aria-live': 'polite' });
  const healthDetail = h('div');
  const nodesBox = h('div', { id: 'nodes' });
  const load = async () => {
    const [ready, cluster] = await Promise.all([
      api('GET', '/readyz', { okStatuses: [503] }),
      api('GET', '/v1/cluster'),
    ]);
    if (!ctx.alive) return;
    const ok = ready?.status === 'ok';
    replace(healthBox,
      stat('Health of this node', h('span', { class: ok ? 'badge ok' : 'badge bad', id: 'readiness' }, ok ? 'ready' : 'not ready')),
      stat('Leader', cluster.leader_id === null || cluster.leader_id === undefined ? 'none' : `node ${cluster.leader_id}`),
      stat('Term', count(cluster.term)),
      stat('Answered by', `node ${cluster.node_id}`),
      stat('Last log index', count(cluster.last_log_index)),
      stat('Last applied', count(cluster.last_applied)));
    replace(healthDetail,
      ready?.reason ? h('p', { class: 'notice' }, `Not ready: ${ready.reason}`) : null,
      ready?.tiering ? h('p', {}, `Tiering bucket ${ready.tiering.bucket}: `,
        ready.tiering.reachable === null ? 'not used yet' : ready.tiering.reachable ? 'reachable' : `unreachable (${ready.tiering.last_error || 'no detail'})`,
        `; ${count(ready.tiering.lag_bytes)} bytes waiting to tier.`) : null,
      h('p', { class: 'muted' }, `Cluster ${cluster.cluster_id}; refreshed every ${POLL_MS / 1000} s.`));
    replace(nodesBox, table([
      ['Node', (n) => (n.id === cluster.leader_id ? [String(n.id), ' ', h('span', { class: 'badge ok' }, 'leader')] : String(n.id))],
      ['Role', (n) => n.role],
      ['API address', (n) => h('code', {}, n.api_addr || '–')],
      ['Cluster address', (n) => h('code', {}, n.cluster_addr)],
      ['Matched index', (n) => count(n.matched_index), { num: true }],
      ['Reachable', (n) => h('span', { class: n.reachable ? 'badge ok' : 'badge bad' }, n.reachable ? 'yes' : 'no')],
    ], cluster.nodes));
  };
  replace(ctx.main, h('h1', {}, 'Cluster'), healthBox, healthDetail, h('h2', {}, 'Nodes'), nodesBox);
  await load();
  ctx.every(POLL_MS, load);
}
