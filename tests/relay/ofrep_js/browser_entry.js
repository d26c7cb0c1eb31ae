// Bundled by esbuild (tests/relay/test_ofrep_providers.py) into build/ofrep-web.js and loaded
// by a page served from another origin than the relay: the real OpenFeature web SDK with the
// real OFREP web provider, driven by the test through window.ofrepTest.
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const changes = [];

window.ofrepTest = {
  changes,
  async start(baseUrl, credential, context) {
    const provider = new OFREPWebProvider({
      baseUrl,
      headers: [['Authorization', `Bearer ${credential}`]],
    });
    const client = OpenFeature.getClient();
    client.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
      changes.push({ flagsChanged: details?.flagsChanged ?? [], at: Date.now() });
    });
    await OpenFeature.setProviderAndWait(provider, context);
    return true;
  },
  details(key, type, fallback) {
    const client = OpenFeature.getClient();
    const get = {
      boolean: () => client.getBooleanDetails(key, fallback),
      string: () => client.getStringDetails(key, fallback),
      number: () => client.getNumberDetails(key, fallback),
      object: () => client.getObjectDetails(key, fallback),
    }[type];
    const d = get();
    return {
      value: d.value,
      variant: d.variant ?? null,
      reason: d.reason ?? null,
      errorCode: d.errorCode ?? null,
      flagMetadata: d.flagMetadata ?? {},
    };
  },
};
