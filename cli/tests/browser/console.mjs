// The kiln console in a real browser: Debian's Chromium, headless, driven by playwright-core.
//
//     node console.mjs <kiln url> <screenshot dir>
//
// cli/tests/browser.rs starts `kiln standalone` with the DAGs this script expects (`handoff`:
// produce -> shout -> count handing a table on through artifacts; `greet`: typed params) and
// runs it; playwright-core comes from the folder named by KILN_BROWSER_NODE_MODULES, which
// .ci/run fills with `npm ci` from this folder's package-lock.json. Each step clicks through the
// pages as a person would, checks what it expects to see, and saves a full-page screenshot.
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
// How long the whole script may take: every wait below has its own limit, this one is the last
// word, so the Rust test never hangs on a stuck browser.
const SCRIPT_LIMIT_MS = 5 * 60_000;

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
  await step('the DAGs page lists both DAGs', async () => {
    await open(page, '/');
    expect(new URL(page.url()).pathname === '/dags', `/ should lead to /dags, got ${page.url()}`);
    // The scheduler loads the DAG folder as it starts; reload until both are listed.
    await until('both DAGs listed', async () => {
      const ids = await page.locator('table.dags a.dag-id').allTextContents();
      if (ids.includes('handoff') && ids.includes('greet')) {
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

// THE MODEL STEPS go here once the ML demo's pages exist: open the deployed model's lineage and
// try a prediction in its form, with a screenshot of each. They get the same `page` and
// `context` (run ids so far, `checkProblems`) as the steps above; browser.rs would add the demo
// DAG (dags/wine_quality.toml) to the DAGs it writes, and the run that trains it comes first.
// For example:
//
//     await step("the deployed model's lineage", async () => {
//       await open(page, '/artifacts/wine_quality/latest');
//       ... expect the training data and the train attempt among the lineage's nodes ...
//       await screenshot(page, 'model-lineage');
//       context.checkProblems();
//     });
//     await step('a prediction from the form', async () => { ... });
async function modelSteps(page, context) {
  // Nothing yet: the model pages do not exist.
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
