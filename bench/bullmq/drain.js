// The BullMQ peer of event-worker's bench (run by `ew-bench orchestrate`, section `bullmq`).
//
//   node drain.js preload --port P --n N   adds N jobs to queue `bench` with addBulk
//                                          (chunks of 1000), then exits
//   node drain.js work --port P --n N      starts one Worker (concurrency 50, a handler that
//                                          returns at once) and exits after the N-th completed
//                                          job, printing one line:
//                                          events=N wall_ms=.. cpu_us=.. rss_kb=..
//
// Each job's data is the bench's 256-byte JSON event data (the same template as the Lua
// preload of the other rows). Jobs are added with removeOnComplete: true (a completed job's
// hash is deleted, as event-worker's XACK forgets an entry) and removeOnFail: false.
// wall_ms is from just before the Worker is created to the last `completed` event;
// cpu_us is this process's user+system CPU over the same interval.
'use strict';
const { Queue, Worker } = require('bullmq');

const args = process.argv.slice(2);
const mode = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf('--' + name);
  return i >= 0 ? args[i + 1] : dflt;
};
const port = Number(opt('port'));
const n = Number(opt('n', '200000'));
const concurrency = Number(opt('concurrency', '50'));
const connection = { host: '127.0.0.1', port };
const QUEUE = 'bench';

// The same 256 bytes as the bench's drain_data_template() once formatted.
function data(i) {
  const pad8 = (v, w) => String(v).padStart(w, '0');
  const head = `{"bookingId":"b-${pad8(i, 8)}","userId":"u-${pad8(i % 10000, 4)}","amount":"${pad8(i % 999999, 6)}","currency":"EUR","pad":"`;
  return JSON.parse(head + 'x'.repeat(256 - head.length - 2) + '"}');
}

async function preload() {
  const q = new Queue(QUEUE, { connection });
  for (let start = 0; start < n; start += 1000) {
    const jobs = [];
    for (let i = start; i < Math.min(n, start + 1000); i++) {
      jobs.push({
        name: 'bench.drain',
        data: data(i),
        opts: { removeOnComplete: true, removeOnFail: false },
      });
    }
    await q.addBulk(jobs);
  }
  await q.close();
}

async function work() {
  let completed = 0;
  let worker;
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  await new Promise((resolve, reject) => {
    worker = new Worker(QUEUE, async () => {}, { connection, concurrency });
    worker.on('completed', () => {
      completed += 1;
      if (completed === n) resolve();
    });
    worker.on('failed', (job, err) => reject(new Error(`job ${job && job.id} failed: ${err}`)));
    worker.on('error', (err) => reject(err));
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  const rssKb = process.resourceUsage().maxRSS;
  console.log(`events=${completed} wall_ms=${Math.round(wallMs)} cpu_us=${cpu.user + cpu.system} rss_kb=${rssKb}`);
  await worker.close();
}

(mode === 'preload' ? preload() : mode === 'work' ? work() : Promise.reject(new Error(`mode ${mode}: preload|work`)))
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(`drain.js ${mode}: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  });
