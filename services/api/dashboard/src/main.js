// The dashboard's browser code. Pages are complete HTML from the server; this adds live
// updates (htmx), charts (uPlot) and locale formatting, under a strict Content-Security-Policy:
// nothing here may inject inline scripts or <style> elements.

import htmx from 'htmx.org';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';

// Before htmx processes the page (it does so on DOMContentLoaded): its indicator <style> and
// eval-based features would be refused by the CSP.
htmx.config.includeIndicatorStyles = false;
htmx.config.allowEval = false;
htmx.config.allowScriptTags = false;
window.htmx = htmx;

const lang = () => document.documentElement.lang || 'en';

// Every change the page asks htmx to make carries the session's CSRF token.
document.addEventListener('htmx:configRequest', (event) => {
  if (event.detail.verb !== 'get') {
    const meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) event.detail.headers['X-CSRF-Token'] = meta.content;
  }
});

function formatTimes(root) {
  const format = new Intl.DateTimeFormat(lang(), { dateStyle: 'medium', timeStyle: 'medium' });
  root.querySelectorAll('time[datetime]').forEach((el) => {
    const at = new Date(el.getAttribute('datetime'));
    if (Number.isNaN(at.getTime())) return;
    el.title = el.getAttribute('datetime');
    el.textContent = format.format(at);
  });
}

function formatNumbers(root) {
  const number = new Intl.NumberFormat(lang(), { maximumFractionDigits: 1 });
  const percent = new Intl.NumberFormat(lang(), { style: 'percent', maximumFractionDigits: 1 });
  root.querySelectorAll('[data-number]').forEach((el) => {
    const value = Number(el.dataset.number);
    if (el.dataset.number !== '' && Number.isFinite(value)) el.textContent = number.format(value);
  });
  root.querySelectorAll('[data-percent]').forEach((el) => {
    const value = Number(el.dataset.percent);
    if (el.dataset.percent !== '' && Number.isFinite(value)) el.textContent = percent.format(value);
  });
}

// Colours with at least 3:1 contrast against white, told apart by dash pattern too.
const SERIES = [
  { stroke: '#1f6feb', dash: [] },
  { stroke: '#c4291c', dash: [6, 4] },
  { stroke: '#7a4fb5', dash: [2, 3] },
];

function renderChart(el) {
  const source = el.dataset.chart;
  if (el.dataset.rendered === source) return;
  let spec;
  try {
    spec = JSON.parse(source);
  } catch {
    return;
  }
  el.querySelector('.uplot')?.remove();
  el._plot?.destroy();
  const number = new Intl.NumberFormat(lang(), { maximumFractionDigits: 1 });
  const unit = spec.unit === 'count' ? '' : ` ${spec.unit}`;
  // Axis ticks show the hour within a day, the day and hour over longer windows.
  const span = spec.x.length > 1 ? spec.x[spec.x.length - 1] - spec.x[0] : 0;
  const tick = new Intl.DateTimeFormat(lang(), span > 2 * 86400
    ? { month: 'short', day: 'numeric', hour: '2-digit' }
    : { hour: '2-digit', minute: '2-digit' });
  const moment = new Intl.DateTimeFormat(lang(), { dateStyle: 'medium', timeStyle: 'short' });
  const options = {
    width: Math.max(el.clientWidth, 200),
    height: 220,
    legend: { show: true },
    scales: { x: { time: true }, ...(spec.unit === '%' ? { y: { range: [0, 100] } } : {}) },
    axes: [
      { values: (_, ticks) => ticks.map((t) => tick.format(new Date(t * 1000))) },
      { size: 64, values: (_, ticks) => ticks.map((t) => number.format(t) + unit) },
    ],
    series: [
      {
        label: spec.time_label || '',
        value: (_, t) => (t == null ? '–' : moment.format(new Date(t * 1000))),
      },
      ...spec.series.map((s, i) => ({
        label: s.label,
        stroke: SERIES[i % SERIES.length].stroke,
        dash: SERIES[i % SERIES.length].dash,
        width: 2,
        // Buckets without data are gaps; a point marks every value so a lone one still shows.
        points: { show: true, size: 5, fill: SERIES[i % SERIES.length].stroke },
        value: (_, v) => (v == null ? '–' : number.format(v) + unit),
      })),
    ],
  };
  const plot = new uPlot(options, [spec.x, ...spec.series.map((s) => s.values)], el);
  const canvas = el.querySelector('canvas');
  if (canvas) {
    canvas.setAttribute('role', 'img');
    canvas.setAttribute('aria-label', spec.title);
  }
  el._plot = plot;
  el.dataset.rendered = source;
  if (!el._observer) {
    el._observer = new ResizeObserver(() => {
      if (el._plot && el.clientWidth > 0) el._plot.setSize({ width: el.clientWidth, height: 220 });
    });
    el._observer.observe(el);
  }
}

function enhance(root) {
  formatTimes(root);
  formatNumbers(root);
  root.querySelectorAll('div.chart[data-chart]').forEach(renderChart);
  // Buttons that only exist for browsers without JavaScript.
  root.querySelectorAll('[data-hide-with-js]').forEach((el) => { el.hidden = true; });
}

document.addEventListener('DOMContentLoaded', () => enhance(document));
document.addEventListener('htmx:afterSwap', (event) => enhance(event.detail.elt.parentNode || document));

// Pickers and filters apply as soon as they change.
document.addEventListener('change', (event) => {
  const target = event.target;
  if (target.matches('select[data-autosubmit]') && target.form) target.form.requestSubmit();
});

// Plain forms that ask first (htmx requests use hx-confirm).
document.addEventListener('submit', (event) => {
  const form = event.target;
  const question = form.dataset.confirm || event.submitter?.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// Form sections and inputs that apply to one choice only (a service's kind, an auth type):
// hidden and disabled while another is chosen, so what is submitted is what is shown. Without
// JavaScript everything shows and the server reads only what applies.
function applyConditions(root) {
  root.querySelectorAll('[data-when-field]').forEach((el) => {
    const control = document.getElementById(`f-${el.dataset.whenField}`);
    if (!control) return;
    // A select's option may stand for a kind (a rule's service is REST, AMQP or SOAP).
    const option = control.tagName === 'SELECT' ? control.selectedOptions[0] : null;
    const chosen = option && option.dataset.kind ? option.dataset.kind : control.value;
    const shown = chosen === el.dataset.whenValue;
    el.hidden = !shown;
    el.querySelectorAll('input, select, textarea').forEach((input) => { input.disabled = !shown; });
  });
}

document.addEventListener('DOMContentLoaded', () => applyConditions(document));
document.addEventListener('change', (event) => {
  if (event.target.matches('select')) applyConditions(document);
});

// The rule editor's event picker appends the chosen name to the list of event names.
document.addEventListener('click', (event) => {
  const button = event.target.closest('[data-add-to]');
  if (!button) return;
  const picker = document.getElementById('event-picker');
  const list = document.getElementById(button.dataset.addTo);
  const name = picker?.value.trim();
  if (!list || !name) return;
  const names = list.value.split('\n').map((l) => l.trim()).filter(Boolean);
  if (!names.includes(name)) names.push(name);
  list.value = names.join('\n');
  picker.value = '';
  list.dispatchEvent(new Event('input', { bubbles: true }));
});

// Date-and-time inputs are in the browser's zone; the server needs its offset.
document.addEventListener('submit', (event) => {
  const form = event.target;
  if (!form.matches('[data-local-time]')) return;
  const offset = form.querySelector('input[name="tz_offset"]');
  const from = form.querySelector('input[name="from"]');
  const at = from && from.value ? new Date(from.value) : new Date();
  if (offset) offset.value = String(at.getTimezoneOffset());
});
