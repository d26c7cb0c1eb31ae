"""LaunchDarkly-exact flag evaluation, compiled once per flag version (sans-I/O).

Public API (details in each module's docstring and docs/evaluation.md):

- Contexts (``context``): ``parse_context(obj)``, ``parse_context_json(bytes|str)``,
  ``parse_context_base64(text)`` → ``Context`` (single kind, multi kind, old user JSON) or
  ``ContextError`` naming what is wrong; ``Context.fully_qualified_key``,
  ``Context.fingerprint`` (equal for contexts that evaluate identically), ``Context.to_json()``.
- Results (``result``): ``EvaluationResult`` (value, variation, ``Reason``, flag version,
  track flags, ``debug_events_until_date``, prerequisites) with its client-side JSON
  (``fragment``/``body``/``patch``) encoded once; ``Reason.to_json()``.
- Compiling (``compiler``): ``compile_flag(obj)`` / ``compile_segment(obj)`` → ``CompiledFlag``
  / ``CompiledSegment``, never raising (malformed items evaluate to ``MALFORMED_FLAG``).
- Environments (``environment``): ``CompiledEnvironment`` — ``apply(kind, key, item)``
  returns the affected flag keys; ``evaluate(key, context)``, ``evaluate_all(context, sdk)``,
  ``all_flags_json(context, sdk, with_reasons=)``, ``evaluated_flag_json(key, context)``,
  ``affected_flags(kind, key)``; ``error_result(key, kind)`` for ``USER_NOT_SPECIFIED``.
- Building blocks: ``attributes`` (attribute references), ``values`` (numbers, dates,
  semantic versions), ``operators`` (the clause operator table), ``bucketing`` (SHA-1 buckets).
"""

from protocol.evaluation.compiler import (
    CompiledFlag,
    CompiledSegment,
    compile_flag,
    compile_segment,
)
from protocol.evaluation.context import (
    Context,
    ContextError,
    SingleContext,
    parse_context,
    parse_context_base64,
    parse_context_json,
)
from protocol.evaluation.environment import SDK_KINDS, CompiledEnvironment, SdkKind, error_result
from protocol.evaluation.result import EvaluationResult, Reason

__all__ = [
    "SDK_KINDS",
    "CompiledEnvironment",
    "CompiledFlag",
    "CompiledSegment",
    "Context",
    "ContextError",
    "EvaluationResult",
    "Reason",
    "SdkKind",
    "SingleContext",
    "compile_flag",
    "compile_segment",
    "error_result",
    "parse_context",
    "parse_context_base64",
    "parse_context_json",
]
