// The kiln console in a real browser: Debian's Chromium, headless, driven by playwright-core.
//
//     node console.mjs <kiln url> <screenshot dir>
//
// cli/tests/browser.rs starts `kiln standalone` with the DAGs this script expects (`handoff`:
// produce -> shout -> count handing a table on through artifacts; `greet`: typed params;
// `wine_quality`: the ML demo, with its CSV) and runs it; playwright-core comes from the folder
// named by KILN_BROWSER_NODE_MODULES, which .ci/run fills with `npm ci` from this folder's
// package-lock.json. Each step clicks through the pages as a person would, checks what it
// expects to see, and saves a full-page screenshot.
// A failure names its step and what was missing; the exit code is non-zero.

import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [base, screenshotDir] = process.argv.slice(2);
if (!base || !screenshotDir) {
  console.error('usage: node console.mjs <kiln url> <screenshot dir>');
  process.exit(2);
}
const modules = process.env.KILN_BROWSER_NODE_MODULES;
const require = createRequire(import.meta.url);
const { chromium } = require(modules ? join(modules, 'playwright-core') : 'playwright-core');

const CHROMIUM = '/usr/bin/chromium';
// How long a run of the test DAGs may take to finish.
const RUN_LIMIT_MS = 60_000;
// How long a run of the ML demo may take: it trains two models, slowly in a debug build.
const MODEL_RUN_LIMIT_MS = 3 * 60_000;
// How long the whole script may take: every wait below has its own limit, this one is the last
// word, so the Rust test never hangs on a stuck browser.
const SCRIPT_LIMIT_MS = 10 * 60_000;

// A failed expectation, with what was seen.
class Failure extends Error {}

function expect(condition, message) {
  if (!condition) {
    throw new Failure(message);
  }
}

let shots = 0;
async function screenshot(page, name) {
  shots += 1;
  const file = join(screenshotDir, `${String(shots).padStart(2, '0')}-${name}.png`);
  // A full-page screenshot stops at the viewport's width, but a drawing wider than the page
  // scrolls inside its box: widen the viewport for the shot, so the whole drawing is in it.
  const viewport = page.viewportSize();
  const overflow = await page.evaluate(() => Math.max(0, ...[...document.querySelectorAll('.scroll')]
    .map((box) => box.scrollWidth - box.clientWidth)));
  if (overflow > 0) {
    await page.setViewportSize({ width: viewport.width + overflow, height: viewport.height });
  }
  await page.screenshot({ path: file, fullPage: true });
  if (overflow > 0) {
    await page.setViewportSize(viewport);
  }
  console.log(`  screenshot ${file}`);
}

// Runs one step, naming it in the output and in any failure.
async function step(name, body) {
  const started = Date.now();
  console.log(`step: ${name}`);
  try {
    const result = await body();
    console.log(`  ok (${Date.now() - started} ms)`);
    return result;
  } catch (error) {
    error.message = `step "${name}" failed: ${error.message}`;
    throw error;
  }
}

// Loads a console path and checks that it answered with a page.
async function open(page, path) {
  const response = await page.goto(new URL(path, base).href);
  expect(response, `no response for ${path}`);
  expect(response.ok(), `${path} answered ${response.status()}: ${(await response.text()).slice(0, 500)}`);
}

// Polls `probe` (which reads the page, and reloads it when it wants a fresh look) until it
// returns `{ done }`; fails at once on `{ failed }`, and after `limit` with what it saw last.
async function until(what, probe, { limit = RUN_LIMIT_MS, every = 500 } = {}) {
  const deadline = Date.now() + limit;
  let last;
  for (;;) {
    last = await probe();
    if (last.done) {
      return last;
    }
    if (last.failed) {
      throw new Failure(`${what}: ${last.failed}`);
    }
    if (Date.now() > deadline) {
      throw new Failure(`${what} did not happen within ${limit} ms; last seen: ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, every));
  }
}

// Watches the page for what a person would not see but should never happen: script errors,
// console errors (CSP violations land there) and failed requests to kiln.
function watchProblems(page) {
  const problems = [];
  page.on('pageerror', (error) => problems.push(`script error: ${error.message}`));
  page.on('console', (message) => {
    // The browser asks for /favicon.ico on its own; kiln has none.
    const favicon = message.location().url?.endsWith('/favicon.ico');
    if (message.type() === 'error' && !favicon) {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('requestfailed', (request) => {
    // A navigation away cancels the page's pending htmx poll; that is not a failure.
    if (request.failure()?.errorText !== 'net::ERR_ABORTED') {
      problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`);
    }
  });
  page.on('response', (response) => {
    const url = new URL(response.url());
    if (response.status() >= 400 && url.pathname !== '/favicon.ico') {
      problems.push(`${response.status()} for ${response.url()}`);
    }
  });
  return () => {
    expect(problems.length === 0, `the browser saw problems:\n  ${problems.join('\n  ')}`);
  };
}

// The row of a DAG on the DAGs page.
function dagRow(page, dagId) {
  return page.locator('table.dags tbody tr').filter({
    has: page.locator('a.dag-id', { hasText: new RegExp(`^${dagId}$`) }),
  });
}

// The run id of a run page's URL.
function runIdOf(page) {
  const match = new URL(page.url()).pathname.match(/^\/runs\/(\d+)$/);
  expect(match, `expected a run page, got ${page.url()}`);
  return Number(match[1]);
}

// The newest column of a DAG's grid: its run and each task's state class.
async function newestGridColumn(page) {
  return page.evaluate(() => {
    const table = document.querySelector('table.grid');
    if (!table) {
      return { grid: 'missing', text: document.querySelector('main')?.innerText.slice(0, 300) };
    }
    const runs = table.querySelectorAll('thead th a.sq');
    const newest = runs[runs.length - 1];
    const cells = [...table.querySelectorAll('tbody tr')].map((row) => {
      const last = row.querySelector('td:last-child .sq');
      return { task: row.querySelector('th').textContent.trim(), state: last?.className ?? 'none' };
    });
    return { run: newest?.getAttribute('href'), runState: newest?.className, cells };
  });
}

async function dagsPage(page, context) {
  await step('the DAGs page lists the test DAGs', async () => {
    await open(page, '/');
    expect(new URL(page.url()).pathname === '/dags', `/ should lead to /dags, got ${page.url()}`);
    // The scheduler loads the DAG folder as it starts; reload until all are listed.
    await until('the test DAGs listed', async () => {
      const ids = await page.locator('table.dags a.dag-id').allTextContents();
      if (['handoff', 'greet', 'wine_quality'].every((id) => ids.includes(id))) {
        return { done: true };
      }
      await page.reload();
      return { ids };
    }, { limit: 30_000 });
    expect(await page.evaluate(() => typeof window.htmx === 'object'), 'htmx is not loaded');
    const description = await dagRow(page, 'handoff').innerText();
    expect(description.includes('Three tasks hand a table to each other'),
      `the handoff row shows no description: ${description}`);
    expect(description.includes('manual only'), `the handoff row should say "manual only": ${description}`);
    await screenshot(page, 'dags');
    context.checkProblems();
  });
}

async function triggerHandoff(page, context) {
  await step('clicking Trigger on the handoff row starts a run', async () => {
    const button = dagRow(page, 'handoff').getByRole('button', { name: 'Trigger', exact: true });
    expect(await button.count() === 1, 'the handoff row has no Trigger button');
    await button.click();
    await page.waitForURL(/\/runs\/\d+$/);
    context.handoffRun = runIdOf(page);
    const heading = await page.locator('h1').first().innerText();
    expect(heading === `Run ${context.handoffRun}`, `the run page is titled "${heading}"`);
    context.checkProblems();
  });

  await step('the grid turns green', async () => {
    await page.getByRole('link', { name: 'handoff', exact: true }).first().click();
    await page.waitForURL(/\/dags\/handoff$/);
    await page.getByRole('link', { name: 'Grid', exact: true }).click();
    await page.waitForURL(/view=grid/);
    const wanted = `/runs/${context.handoffRun}`;
    await until('every task of the new run succeeding in the grid', async () => {
      const column = await newestGridColumn(page);
      const states = column.cells?.map((cell) => cell.state) ?? [];
      if (column.run === wanted && states.length === 3 && states.every((state) => state.includes('st-success'))
        && column.runState.includes('st-success')) {
        return { done: true, ...column };
      }
      if (states.some((state) => /st-(failed|upstream_failed)/.test(state))) {
        // The run page says why.
        await open(page, wanted);
        const tasks = await page.locator('table.tasks').innerText();
        return { failed: `a task failed:\n${tasks}` };
      }
      await page.reload();
      return column;
    });
    const tasks = (await newestGridColumn(page)).cells.map((cell) => cell.task);
    expect(JSON.stringify(tasks) === JSON.stringify(['produce', 'shout', 'count']),
      `the grid's rows are ${JSON.stringify(tasks)}`);
    await screenshot(page, 'grid');
    context.checkProblems();
  });
}

async function runPage(page, context) {
  await step('the run page shows the tasks and the Gantt chart', async () => {
    // The newest column's header square links to the run.
    await page.locator('table.grid thead th a.sq').last().click();
    await page.waitForURL(new RegExp(`/runs/${context.handoffRun}$`));
    const live = page.locator('#run-live');
    expect(await live.locator('.title-row .state.st-success').count() === 1, 'the run is not shown as success');
    expect(await live.getAttribute('hx-get') === null, 'a finished run still polls');
    const bars = await live.locator('.scroll svg').count();
    expect(bars === 1, `expected one Gantt chart, found ${bars}`);
    const rows = await live.locator('table.tasks tbody tr').allInnerTexts();
    expect(rows.length === 3 && rows.every((row) => row.includes('success') && row.includes('1 / 1')),
      `the task table reads:\n${rows.join('\n')}`);
    await screenshot(page, 'run-gantt');
    context.checkProblems();
  });

  await step('a task page shows its log and artifacts', async () => {
    await page.locator('#run-live table.tasks').getByRole('link', { name: 'count', exact: true }).click();
    await page.waitForURL(new RegExp(`/runs/${context.handoffRun}/tasks/count$`));
    const log = await page.locator('pre.log').innerText();
    expect(log.includes('counted 2 rows'), `the log of count reads: ${JSON.stringify(log)}`);
    const artifacts = await page.locator('table.artifacts tbody tr').allInnerTexts();
    expect(artifacts.length === 2
      && artifacts[0].includes('read') && artifacts[0].includes('handoff.shout.upper@1')
      && artifacts[1].includes('wrote') && artifacts[1].includes('handoff.count.summary@1'),
    `count's artifacts read:\n${artifacts.join('\n')}`);
    await screenshot(page, 'task-log');
    context.checkProblems();
  });
}

async function lineage(page, context) {
  await step('the artifacts page lists what the run wrote', async () => {
    await page.locator('header.top nav').getByRole('link', { name: 'Artifacts' }).click();
    await page.waitForURL(/\/artifacts$/);
    const names = await page.locator('a.artifact-name').allTextContents();
    for (const name of ['handoff_table', 'handoff.shout.upper', 'handoff.count.summary']) {
      expect(names.includes(name), `the artifacts page lists ${JSON.stringify(names)}, not ${name}`);
    }
    await screenshot(page, 'artifacts');
    context.checkProblems();
  });

  await step("the consumer's output shows its preview and its lineage", async () => {
    await page.getByRole('link', { name: 'handoff.count.summary', exact: true }).click();
    await page.waitForURL(/\/artifacts\/handoff\.count\.summary$/);
    await page.locator('table.versions').getByRole('link', { name: 'v1', exact: true }).click();
    await page.waitForURL(/\/artifacts\/handoff\.count\.summary\/1$/);
    const heading = await page.locator('h1').innerText();
    expect(heading === 'handoff.count.summary@1', `the version page is titled "${heading}"`);
    const preview = await page.locator('table.preview').innerText();
    expect(/rows\s+2/.test(preview), `the preview reads: ${JSON.stringify(preview)}`);
    const drawing = page.locator('section.view svg');
    expect(await drawing.count() === 1, 'the version page draws no lineage');
    // Each node's tooltip carries its whole label (the drawn text may be cut).
    const nodes = await drawing.locator('g.node > title').allTextContents();
    const run = context.handoffRun;
    for (const label of [
      'handoff.count.summary@1', 'handoff.shout.upper@1', 'handoff_table@1',
      `handoff/count run ${run}`, `handoff/shout run ${run}`, `handoff/produce run ${run}`,
    ]) {
      expect(nodes.some((node) => node.startsWith(label)),
        `the lineage has no node ${label}; its nodes: ${JSON.stringify(nodes)}`);
    }
    expect(await drawing.locator('g.node.focus').count() === 1, 'the lineage does not outline the version itself');
    await screenshot(page, 'lineage');
    context.checkProblems();
  });
}

async function triggerWithParams(page, context) {
  await step('the generated trigger form of greet takes typed params', async () => {
    await page.locator('header.top nav').getByRole('link', { name: 'DAGs' }).click();
    await page.waitForURL(/\/dags$/);
    const row = dagRow(page, 'greet');
    await row.locator('details.trigger summary').click();
    const form = row.locator('form.params');
    const name = form.locator('input[name="param.name"]');
    expect(await name.inputValue() === 'world', 'the name field does not show its default');
    await name.fill('browser');
    await form.locator('input[name="param.times"]').fill('3');
    await form.locator('select[name="param.loud"]').selectOption('true');
    await screenshot(page, 'trigger-form');
    await form.getByRole('button', { name: 'Trigger', exact: true }).click();
    await page.waitForURL(/\/runs\/\d+$/);
    context.greetRun = runIdOf(page);
    const params = JSON.parse(await page.locator('pre.params').innerText());
    expect(params.name === 'browser' && params.times === 3 && params.loud === true,
      `the run's params are ${JSON.stringify(params)}`);
    context.checkProblems();
  });

  await step("the run page follows the run live until it succeeds (htmx, no reload)", async () => {
    // A mark on the window survives only if the page is never reloaded.
    await page.evaluate(() => { window.kilnNotReloaded = true; });
    const polling = await page.locator('#run-live').getAttribute('hx-get');
    console.log(`  the run page ${polling ? `polls ${polling}` : 'was already final'}`);
    await page.locator('#run-live .title-row .state.st-success').waitFor({ timeout: RUN_LIMIT_MS });
    expect(await page.evaluate(() => window.kilnNotReloaded === true), 'the page was reloaded');
    expect(await page.locator('#run-live').getAttribute('hx-get') === null, 'the finished run still polls');
    await screenshot(page, 'param-run');
    context.checkProblems();
  });
}

// The first row of data/winequality-red.csv (quality 5), as the prediction form's fields.
const FIRST_WINE = {
  'fixed acidity': '7.4', 'volatile acidity': '0.7', 'citric acid': '0', 'residual sugar': '1.9',
  chlorides: '0.076', 'free sulfur dioxide': '11', 'total sulfur dioxide': '34', density: '0.9978',
  pH: '3.51', sulphates: '0.56', alcohol: '9.4',
};

// The ML demo (dags/wine_quality.toml on data/winequality-red.csv): train it from a click, then
// the model it deploys, a prediction from the model's form, and the deployed version's lineage
// back to the raw CSV.
async function modelSteps(page, context) {
  await step('clicking Trigger on wine_quality trains and deploys a model', async () => {
    await page.locator('header.top nav').getByRole('link', { name: 'DAGs' }).click();
    await page.waitForURL(/\/dags$/);
    const button = dagRow(page, 'wine_quality').getByRole('button', { name: 'Trigger', exact: true });
    expect(await button.count() === 1, 'the wine_quality row has no Trigger button');
    await button.click();
    await page.waitForURL(/\/runs\/\d+$/);
    context.wineRun = runIdOf(page);
    await page.getByRole('link', { name: 'wine_quality', exact: true }).first().click();
    await page.waitForURL(/\/dags\/wine_quality$/);
    await page.getByRole('link', { name: 'Grid', exact: true }).click();
    await page.waitForURL(/view=grid/);
    // The demo runs daily without catch-up, so the server started today's run as it came up;
    // this run may find that one's steps done and reuse them (identical bytes keep version 1).
    const wanted = `/runs/${context.wineRun}`;
    const tasks = ['ingest', 'process', 'train_logreg', 'train_tree', 'evaluate', 'deploy'];
    await until('every task of the wine_quality run succeeding in the grid', async () => {
      const column = await newestGridColumn(page);
      const states = column.cells?.map((cell) => cell.state) ?? [];
      if (column.run === wanted && states.length === tasks.length
        && states.every((state) => state.includes('st-success')) && column.runState.includes('st-success')) {
        return { done: true, ...column };
      }
      if (column.run === wanted && states.some((state) => /st-(failed|upstream_failed)/.test(state))) {
        await open(page, wanted);
        const table = await page.locator('table.tasks').innerText();
        return { failed: `a task failed:\n${table}` };
      }
      await page.reload();
      return column;
    }, { limit: MODEL_RUN_LIMIT_MS, every: 1000 });
    const rows = (await newestGridColumn(page)).cells.map((cell) => cell.task);
    expect(JSON.stringify(rows) === JSON.stringify(tasks), `the grid's rows are ${JSON.stringify(rows)}`);
    await screenshot(page, 'model-grid');
    context.checkProblems();
  });

  await step('the model page shows version 1 in production with its accuracy', async () => {
    await page.locator('header.top nav').getByRole('link', { name: 'Models' }).click();
    await page.waitForURL(/\/models$/);
    await page.locator('table.models').getByRole('link', { name: 'wine_quality', exact: true }).click();
    await page.waitForURL(/\/models\/wine_quality$/);
    const production = await page.locator('dl.facts').first().innerText();
    expect(/Production\s+v1\b/.test(production), `the model's facts read: ${JSON.stringify(production)}`);
    const table = page.locator('table.versions');
    const headers = (await table.locator('thead th').allInnerTexts()).map((text) => text.trim());
    const accuracyColumn = headers.indexOf('accuracy');
    expect(accuracyColumn >= 0, `the versions table has no accuracy column: ${JSON.stringify(headers)}`);
    const served = table.locator('tbody tr[aria-current="true"]');
    expect(await served.count() === 1, 'no version row is marked as the one in production');
    const cells = (await served.locator('td').allInnerTexts()).map((text) => text.trim());
    expect(cells[0] === 'v1' && cells[1].includes('production'), `the production row reads ${JSON.stringify(cells)}`);
    const accuracy = Number(cells[accuracyColumn]);
    // The DAG's gate lets only models with 70% accuracy or more through to the deploy.
    expect(accuracy >= 0.7 && accuracy <= 1, `version 1's accuracy reads ${JSON.stringify(cells[accuracyColumn])}`);
    expect(await page.locator('section.view svg').count() === 1, 'the model page draws no metric chart');
    await screenshot(page, 'model');
    context.checkProblems();
  });

  await step("a prediction from the model page's form", async () => {
    const form = page.locator('form.predict');
    const fields = await form.locator('input[name^="feature."]').evaluateAll(
      (inputs) => inputs.map((input) => input.name.slice('feature.'.length)));
    expect(JSON.stringify([...fields].sort()) === JSON.stringify(Object.keys(FIRST_WINE).sort()),
      `the form asks for ${JSON.stringify(fields)}`);
    for (const [feature, value] of Object.entries(FIRST_WINE)) {
      await form.locator(`input[name="feature.${feature}"]`).fill(value);
    }
    await page.evaluate(() => { window.kilnNotReloaded = true; });
    await form.getByRole('button', { name: 'Predict', exact: true }).click();
    const result = page.locator('#prediction-result');
    await result.locator('strong.predicted').waitFor();
    expect(await page.evaluate(() => window.kilnNotReloaded === true), 'the form reloaded the page instead of htmx');
    const label = (await result.locator('strong.predicted').innerText()).trim();
    const rows = await result.locator('table.probabilities tbody tr').evaluateAll((trs) => trs.map((tr) => ({
      label: tr.querySelector('td')?.textContent.trim(),
      probability: Number(tr.querySelector('td.number')?.textContent),
      chosen: tr.getAttribute('aria-current') === 'true',
    })));
    expect(rows.length === 2, `expected two classes, the probabilities read ${JSON.stringify(rows)}`);
    const total = rows.reduce((sum, row) => sum + row.probability, 0);
    expect(rows.every((row) => row.probability >= 0 && row.probability <= 1) && Math.abs(total - 1) < 0.01,
      `the probabilities do not add up: ${JSON.stringify(rows)}`);
    const chosen = rows.filter((row) => row.chosen);
    expect(chosen.length === 1 && chosen[0].label === label,
      `the prediction ${JSON.stringify(label)} is not the marked class: ${JSON.stringify(rows)}`);
    const answeredBy = await result.locator('dl.prediction a').innerText();
    expect(answeredBy === 'version 1', `the prediction was answered by ${JSON.stringify(answeredBy)}`);
    console.log(`  predicted ${label} (${rows.map((row) => `${row.label}: ${row.probability}`).join(', ')})`);
    await screenshot(page, 'prediction');
    context.checkProblems();
  });

  await step("the deployed version's lineage reaches the raw CSV", async () => {
    // The production version's link among the model's facts.
    await page.locator('dl.facts').first().locator('dt', { hasText: /^Production$/ })
      .locator('xpath=following-sibling::dd[1]').getByRole('link', { name: 'v1', exact: true }).click();
    await page.waitForURL(/\/artifacts\/wine_quality\/1$/);
    const heading = await page.locator('h1').innerText();
    expect(heading === 'wine_quality@1', `the version page is titled "${heading}"`);
    const drawing = page.locator('section.view svg');
    expect(await drawing.count() === 1, 'the version page draws no lineage');
    const nodes = await drawing.locator('g.node > title').allTextContents();
    for (const label of ['wine_quality@1', 'wine_raw@', 'wine_quality/deploy run', 'wine_quality/ingest run']) {
      expect(nodes.some((node) => node.startsWith(label)),
        `the lineage has no node ${label}; its nodes: ${JSON.stringify(nodes)}`);
    }
    await screenshot(page, 'model-lineage');
    context.checkProblems();
  });
}

async function main() {
  setTimeout(() => {
    console.error(`the script did not finish within ${SCRIPT_LIMIT_MS} ms`);
    process.exit(1);
  }, SCRIPT_LIMIT_MS).unref();
  // Screenshots of an earlier run would pass for this one's.
  mkdirSync(screenshotDir, { recursive: true });
  for (const file of readdirSync(screenshotDir)) {
    if (/^\d\d-[a-z-]+\.png$/.test(file)) {
      rmSync(join(screenshotDir, file));
    }
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.setDefaultTimeout(15_000);
    const context = { checkProblems: watchProblems(page) };
    await dagsPage(page, context);
    await triggerHandoff(page, context);
    await runPage(page, context);
    await lineage(page, context);
    await triggerWithParams(page, context);
    await modelSteps(page, context);
    console.log(`done: ${shots} screenshots in ${screenshotDir}`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error.message);
  if (!(error instanceof Failure)) {
    // Where it happened: the stack's frames (its first lines repeat the message).
    console.error((error.stack ?? '').split('\n').filter((line) => line.startsWith('    at ')).join('\n'));
  }
  process.exit(1);
});
