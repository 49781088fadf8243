// Builds the page with DOM calls only: text goes in as text nodes, never as markup, so nothing a
// server or a message holds can become HTML or script.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') el.textContent = String(value);
    else if (key === 'class') el.setAttribute('class', value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'style' || /html$/i.test(key)) throw new Error(`refusing attribute ${key}`); // markup setters, inline style
    else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Appends children: nodes as they are, strings and numbers as text, arrays flattened, null skipped. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** `h('button', {type: 'button', onclick: f}, 'Save')` */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  return append(clear(el), children);
}

/** A table; `columns` are `[header, cell(row) -> node|string, {num}]`. Rows get data-label for phones. */
export function table(columns, rows, { empty = 'Nothing here yet.', caption } = {}) {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'responsive' },
      caption ? h('caption', { class: 'muted' }, caption) : null,
      h('thead', {}, h('tr', {}, columns.map(([title, , opts]) => h('th', { scope: 'col', class: opts?.num ? 'num' : null }, title)))),
      h('tbody', {}, rows.map((row) => h('tr', {},
        columns.map(([title, cell, opts]) => h('td', { 'data-label': title, class: opts?.num ? 'num' : null }, cell(row))))))));
}

let fields = 0;

/** A labelled control. The label points at it by id, so its name is the label alone. */
export function field(label, input) {
  if (!input.id) {
    fields += 1;
    input.id = `field-${fields}`;
  }
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input);
}

/** Shows a 403's detail in `box` in place of what it would have held; rethrows anything else. */
export function denied(box, e) {
  if (e?.status !== 403) throw e;
  replace(box, h('p', { class: 'notice' }, `Not allowed: ${e.detail}`));
}
