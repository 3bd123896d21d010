// BullMQ's side of `python -m bench.compare`: one Node process, the producer and the
// workers both. The bench sends a phase name on stdin ("enqueue", "drain", "latency") and
// reads one JSON line on stdout when the phase is done, so it can measure Redis between
// phases. Arguments: redis port, jobs, workers, enqueue batch, latency samples, warm-up.
import { createInterface } from 'node:readline';
import { Queue, Worker } from 'bullmq';

const [port, jobs, workers, batch, samples, warmup] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port };
const phases = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const say = (event, fields = {}) => process.stdout.write(JSON.stringify({ event, ...fields }) + '\n');
const cpuSeconds = () => {
  const used = process.cpuUsage();
  return (used.user + used.system) / 1e6;
};
const expect = async (phase) => {
  const { value, done } = await phases.next();
  if (done || value.trim() !== phase) throw new Error(`expected phase ${phase}, got ${value}`);
};

// A worker's job handler does nothing: the bench measures the queue, not the work.
async function drainWith(queue) {
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const worker = new Worker(queue.name, async () => null, { connection, concurrency: workers, autorun: false });
  worker.on('completed', () => {
    done += 1;
    if (done === jobs) finish();
  });
  worker.on('failed', (job, error) => say('error', { message: String(error) }));
  await worker.waitUntilReady();
  const begun = performance.now();
  const cpu = cpuSeconds();
  worker.run();
  await finished;
  const seconds = (performance.now() - begun) / 1000;
  const used = cpuSeconds() - cpu;
  await worker.close();
  return { seconds, cpu: used };
}

// One parked worker; one job at a time; the time from before `add` to the handler's start.
async function latencies() {
  const queue = new Queue('latency', { connection });
  let started;
  let handled;
  const worker = new Worker('latency', async () => {
    started = performance.now();
  }, { connection, concurrency: 1 });
  worker.on('completed', () => handled());
  await worker.waitUntilReady();
  const samplesMs = [];
  for (let i = 0; i < warmup + samples; i++) {
    const done = new Promise((resolve) => (handled = resolve));
    const begun = performance.now();
    await queue.add('n', { i });
    await done;
    if (i >= warmup) samplesMs.push(started - begun);
  }
  await worker.close();
  await queue.close();
  return samplesMs;
}

const queue = new Queue('bench', { connection });
await queue.waitUntilReady();
say('ready');

await expect('enqueue');
let begun = performance.now();
let cpu = cpuSeconds();
for (let start = 0; start < jobs; start += batch) {
  const items = [];
  for (let i = start; i < Math.min(jobs, start + batch); i++) items.push({ name: 'n', data: { i } });
  await queue.addBulk(items);
}
say('enqueued', { seconds: (performance.now() - begun) / 1000, cpu: cpuSeconds() - cpu });

await expect('drain');
const drained = await drainWith(queue);
const counts = await queue.getJobCounts('completed', 'waiting', 'active', 'failed');
if (counts.completed !== jobs) throw new Error(`expected ${jobs} completed, have ${JSON.stringify(counts)}`);
say('drained', drained);

await expect('latency');
say('latencies', { ms: await latencies() });
await queue.close();
process.exit(0);
