// Evaluates flags through the real Node OpenFeature server SDK and OFREP provider.
// Reads a job from stdin: {"baseUrl", "credential", "cases": [{key, type, default, context}]}
// and prints one JSON array: the evaluation details of every case, in order.
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const job = JSON.parse(Buffer.concat(chunks).toString('utf8'));

await OpenFeature.setProviderAndWait(
  new OFREPProvider({
    baseUrl: job.baseUrl,
    headers: [['Authorization', `Bearer ${job.credential}`]],
  }),
);
const client = OpenFeature.getClient();
const getters = {
  boolean: (k, d, c) => client.getBooleanDetails(k, d, c),
  string: (k, d, c) => client.getStringDetails(k, d, c),
  number: (k, d, c) => client.getNumberDetails(k, d, c),
  object: (k, d, c) => client.getObjectDetails(k, d, c),
};
const out = [];
for (const { key, type, default: fallback, context } of job.cases) {
  const details = await getters[type](key, fallback, context);
  out.push({
    key: details.flagKey,
    value: details.value,
    variant: details.variant ?? null,
    reason: details.reason ?? null,
    errorCode: details.errorCode ?? null,
    flagMetadata: details.flagMetadata ?? {},
  });
}
await OpenFeature.close();
process.stdout.write(JSON.stringify(out));
