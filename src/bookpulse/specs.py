"""Typed specs: the feature catalog (`features/*.yaml`) and the model specs (`models/*.yaml`).

A model spec is the single place to change a model: its target, population and horizon, the
features it uses (each must be declared in the catalog, for the right entity), its LightGBM
parameters, how time is split, its promotion gates and its registered name.
"""

from __future__ import annotations

import hashlib
import json
import math
import string
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bookpulse.config import get_settings
from bookpulse.domain import CONTACT_ACTIONS, ENTITY_KEYS, PRODUCT_FLAGS, SEGMENTS, TIERS
from bookpulse.errors import BookpulseError

Dtype = Literal["float64", "float32", "int8", "int16", "int32", "category"]
Entity = Literal["customer", "card"]
# Kinds of target (bookpulse/labels.py): what happens in the outcome window after month-end T.
#   attrition        the customer attrites (closes, or goes dormant) at a month-end in (T, T+N]
#   tier_up          the customer is active at T+N in a higher tier than at T
#   product_take_up  the customer holds `product` at a month-end in (T, T+N]
#   first_use        a card issued in the month ending T is first used within N days after T
TargetKind = Literal["attrition", "tier_up", "product_take_up", "first_use"]
MONTHLY_KINDS = ("attrition", "tier_up", "product_take_up")
Tier = Literal[TIERS]  # type: ignore[valid-type]
ProductFlag = Literal[PRODUCT_FLAGS]  # type: ignore[valid-type]
SourceTable = Literal["snapshots", "customers", "cards", "card_spend", "relationships", "branches"]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class SpecError(BookpulseError):
    """A spec file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


REASON_KEYS = ("value", "exp", "pct")
_SAMPLE_KEYS = {"value": 1.5, "exp": 3.48, "pct": 150.0}  # formats a text once to check it


def _format_problem(text: str) -> str | None:
    """Why `text` is not a reason format string over {value}, {exp} and {pct}, or None."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        roots = {f.split(".")[0].split("[")[0] for f in fields}
        if "" in roots:
            return "a positional {} (name the figure: {value}, {exp} or {pct})"
        if roots - set(REASON_KEYS):
            return f"unknown keys {sorted(roots - set(REASON_KEYS))} (known: {REASON_KEYS})"
        text.format(**_SAMPLE_KEYS)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as e:
        return f"does not format a number: {e}"
    return None


class ReasonBand(_Strict):
    """One band of a feature's `reason_bands`: the figures below `below` (and from the
    previous band's bound up) read `text`, a format string over {value}, {exp} and {pct} like
    `reason` (or the feature's `reason` itself when `text` is left out). The bound is in the
    units of the figure the feature's `reason` prints: its one key, {value}, {exp} or {pct}
    (so `below: 9` on an {exp:.0%} reason is +900%, tenfold)."""

    below: float | None = Field(
        default=None,
        description="the band holds figures strictly below this (a figure equal to it falls "
        "in the next band); left out on the last band only, which runs to +infinity",
    )
    text: str | None = Field(
        default=None,
        min_length=5,
        description="the phrase for the band's figures (default: the feature's `reason`)",
    )

    @model_validator(mode="after")
    def _a_bound_or_a_text(self) -> ReasonBand:
        if self.below is None and self.text is None:
            raise ValueError("a band needs a bound (`below`), a `text` or both")
        if self.below is not None and math.isnan(self.below):
            raise ValueError("`below` must be a number, not NaN")
        if self.text is not None and (problem := _format_problem(self.text)) is not None:
            raise ValueError(f"text {self.text!r}: {problem}")
        return self


class FeatureSpec(_Strict):
    name: Name
    dtype: Dtype
    window_months: int = Field(ge=1, le=13, description="month-ends up to T the feature reads")
    source: SourceTable
    description: str = Field(min_length=10)
    reason: str | None = Field(
        default=None,
        description="how a reason names this feature's value for a banker, a format string "
        "over {value} (the feature; text for categoricals), {exp} (e^value - 1, for log "
        "features) and {pct} (100 x value), e.g. 'holds {value:.0f} product lines'",
    )
    reason_bands: list[ReasonBand] = Field(
        default_factory=list,
        description="the reason by what the figure means: bands in rising order of their "
        "bound, each the figures from the previous band's bound (inclusive) to its `below` "
        "(exclusive), read in its own words (e.g. 'transactions last month under a quarter "
        "of the 12-month average'); figures past the last bound read `reason`. Also where a "
        "figure stops being believable (assets must grow more than tenfold). For a numeric "
        "reason showing one figure; bounds in that figure's units",
    )
    group: Name | None = Field(
        default=None,
        description="the feature group (features/<group>.yaml) the feature is declared in: "
        "set by the catalog, not written in the file. Reasons of a row come from different "
        "groups (bookpulse.model.core)",
    )
    monitor: bool = Field(
        default=True,
        description="false for a feature that changes by design from one month to the next "
        "(the calendar month): the drift monitor leaves it out",
    )
    slice_in: list[Literal["weak_spots", "fairness"]] = Field(
        default_factory=list,
        description="tables that break each model's figures down by this feature's groups: "
        "weak_spots (AUC and observed/expected by group in the validation pack and the "
        "review), fairness (those and the listing rate, in the model card and the review); "
        "customer features only, joined to a card's holder for card models",
    )

    @model_validator(mode="after")
    def _bands_fit_the_reason(self) -> FeatureSpec:
        bands = self.reason_bands
        if not bands:
            return self
        if self.reason_figure is None:
            raise ValueError(
                "reason_bands needs a numeric reason showing one figure: {value}, {exp} or "
                "{pct} (the bands' bounds are in its units)"
            )
        if (problem := _format_problem(self.reason or "")) is not None:
            raise ValueError(f"reason {self.reason!r}: {problem}")
        for i, band in enumerate(bands[:-1]):
            if band.below is None:
                raise ValueError(
                    f"reason_bands[{i}] has no bound (`below`): only the last band may "
                    "leave it out (it runs to +infinity)"
                )
        bounds = [b.below for b in bands if b.below is not None]
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            if not a < b:
                raise ValueError(
                    f"reason_bands must be in rising order of `below`: band {i + 1} "
                    f"(below {b:g}) follows a band below {a:g}; a figure takes the first "
                    "band whose bound it is under"
                )
        if all(b.text is None for b in bands):
            raise ValueError("reason_bands: every band reads the plain reason; give a text")
        return self

    def reason_band_table(self) -> tuple[list[float], list[str]]:
        """(bounds, templates): a figure f reads templates[i] for i the number of bounds
        <= f (`bisect_right`, `np.searchsorted(..., side="right")`); one more template than
        bounds, the last for figures past every bound."""
        reason = self.reason or ""
        bounds = [b.below for b in self.reason_bands if b.below is not None]
        texts = [b.text or reason for b in self.reason_bands]
        if len(texts) == len(bounds):  # the last band has a bound: the reason reads on
            texts.append(reason)
        return bounds, texts

    @property
    def reason_figure(self) -> str | None:
        """The key of the one figure a numeric reason prints ({value}, {exp} or {pct}), if
        it prints exactly one."""
        if self.dtype == "category" or not self.reason or "|" in self.reason:
            return None
        keys = {
            field.split(".")[0].split("[")[0]
            for _, field, _, _ in string.Formatter().parse(self.reason)
            if field is not None
        }
        return keys.pop() if len(keys) == 1 and keys <= set(REASON_KEYS) else None


class FeatureGroup(_Strict):
    group: Name
    entity: Entity
    description: str
    features: list[FeatureSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _features_know_their_group(cls, data):
        """Each feature carries the group it is declared in (`FeatureSpec.group`)."""
        if not isinstance(data, dict) or not isinstance(data.get("features"), list):
            return data
        group = data.get("group")
        features = []
        for f in data["features"]:
            if isinstance(f, dict):
                if f.get("group", group) != group:
                    raise ValueError(f"feature {f.get('name')!r} names another group")
                f = {**f, "group": group}
            elif isinstance(f, FeatureSpec) and f.group != group:
                f = f.model_copy(update={"group": group})
            features.append(f)
        return {**data, "features": features}


class FeatureCatalog(_Strict):
    groups: dict[str, FeatureGroup]

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureCatalog:
        seen: dict[tuple[str, str], str] = {}
        for g in self.groups.values():
            for f in g.features:
                key = (g.entity, f.name)
                if key in seen:
                    raise ValueError(
                        f"feature {f.name!r} declared in both {seen[key]} and {g.group}"
                    )
                seen[key] = g.group
        return self

    def for_entity(self, entity: Entity) -> dict[str, FeatureSpec]:
        return {f.name: f for g in self.groups.values() if g.entity == entity for f in g.features}

    def sliced_by(self, table: Literal["weak_spots", "fairness"]) -> list[str]:
        """The customer features whose groups break figures down in `table`, in catalog order."""
        return [f for f, s in self.for_entity("customer").items() if table in s.slice_in]

    def slice_columns(self) -> list[str]:
        """Every customer feature some breakdown table reads."""
        return [f for f, s in self.for_entity("customer").items() if s.slice_in]


class Population(_Strict):
    """Who a model labels and scores at month-end T, beyond its entity's own population (active
    customers; cards issued in the month ending T and still unused). Applied by one function
    (`bookpulse.labels.in_population`) to the book's snapshots and to feature frames alike."""

    exclude_tiers: list[Tier] = Field(
        default_factory=list, description="tiers at T left out (e.g. the top tier for tier_up)"
    )
    without_products: list[ProductFlag] = Field(
        default_factory=list,
        description="product lines a customer must not hold at T (e.g. has_wealth for a "
        "wealth take-up)",
    )


class TargetSpec(_Strict):
    kind: TargetKind
    entity: Entity
    label: Name = Field(description="label column in training sets; also the outcome word")
    horizon_months: int | None = Field(default=None, ge=1, le=24)
    horizon_days: int | None = Field(default=None, ge=1, le=365)
    product: ProductFlag | None = Field(
        default=None, description="the product line taken up (kind product_take_up)"
    )
    scored: Population = Field(
        default_factory=Population, description="the population rule, beyond the entity's own"
    )
    truth: str | None = Field(
        default=None,
        description="the simulator's column of true probabilities for this target (truth/), "
        "when the book is synthetic: the ceiling",
    )
    population: str = Field(min_length=10)
    event: str = Field(min_length=10)
    leavers: str = Field(min_length=10, description="how customers who leave early are treated")

    @model_validator(mode="after")
    def _fits_kind(self) -> TargetSpec:
        monthly = self.kind in MONTHLY_KINDS
        if monthly and (self.horizon_months is None or self.horizon_days is not None):
            raise ValueError(f"kind {self.kind} takes horizon_months (and no horizon_days)")
        if not monthly and (self.horizon_days is None or self.horizon_months is not None):
            raise ValueError(f"kind {self.kind} takes horizon_days (and no horizon_months)")
        want = "customer" if monthly else "card"
        if self.entity != want:
            raise ValueError(f"kind {self.kind} labels a {want}, not a {self.entity}")
        if (self.kind == "product_take_up") != (self.product is not None):
            raise ValueError("give product exactly when kind is product_take_up")
        if self.entity == "card" and (self.scored.exclude_tiers or self.scored.without_products):
            raise ValueError("scored: rules on tiers and products apply to customers only")
        return self

    @property
    def id_column(self) -> str:
        return ENTITY_KEYS[self.entity]


class LightGBMSpec(_Strict):
    params: dict[str, float | int | str | bool]
    num_boost_round: int = Field(ge=10, le=20_000)
    early_stopping_rounds: int = Field(ge=5, le=1_000)
    max_train_rows: int | None = Field(
        default=None,
        ge=10_000,
        description="above this, non-events are sampled down (every event kept) and weighted "
        "back, so a large book trains in minutes; calibration still sees every row",
    )


class SplitSpec(_Strict):
    """Out-of-time split, counted back from the latest labelled month."""

    test_months: int = Field(ge=1, le=12)
    calibration_months: int = Field(ge=1, le=12)
    valid_months: int = Field(ge=1, le=12)
    train_months: int = Field(ge=1, le=60)


class GateSpec(_Strict):
    min_auc: float = Field(gt=0.5, le=1.0)
    max_calibration_error: float = Field(
        gt=0.0,
        le=0.5,
        description="largest calibration error allowed beyond its sampling noise (ece_excess)",
    )
    max_auc_drop: float = Field(
        ge=0.0,
        le=0.2,
        description="the margin of DeLong's paired test against the champion: promoted when "
        "the 95% interval of the AUC difference rules out trailing by more than this",
    )


class ReasonHint(_Strict):
    """What a banker should know when a feature raises or lowers this model's score."""

    raises: str | None = Field(default=None, min_length=5)
    lowers: str | None = Field(default=None, min_length=5)


class ModelSpec(_Strict):
    name: Name
    description: str
    registered_name: str = Field(pattern=r"^bookpulse-[a-z0-9_]+$")
    output_prefix: Name | None = Field(
        default=None,
        description="prefix of this model's columns in the score tables and its key in API "
        "replies (default: the name), e.g. upgrade -> upgrade_probability",
    )
    score_noun: str = Field(
        min_length=3, description="what the score is, in a sentence: 'the churn risk'"
    )
    target: TargetSpec
    features: list[Name] = Field(min_length=1)
    lightgbm: LightGBMSpec
    split: SplitSpec
    gates: GateSpec
    reason_hints: dict[Name, ReasonHint] = Field(
        default_factory=dict,
        description="feature -> the sentence's second half when it raises / lowers the score",
    )

    @property
    def prefix(self) -> str:
        return self.output_prefix or self.name

    @property
    def entity(self) -> Entity:
        return self.target.entity

    @property
    def id_column(self) -> str:
        return self.target.id_column

    @cached_property
    def spec_hash(self) -> str:
        """Short hash of the spec's content (what changes when the model definition does)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @model_validator(mode="after")
    def _features_unique(self) -> ModelSpec:
        dupes = {f for f in self.features if self.features.count(f) > 1}
        if dupes:
            raise ValueError(f"features listed twice: {sorted(dupes)}")
        return self


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot be read as YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    return data


def _explain(path: Path, exc: ValidationError) -> SpecError:
    lines = [f"{path} is not a valid spec:"]
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return SpecError("\n".join(lines))


def features_dir() -> Path:
    return get_settings().specs_root / "features"


def models_dir() -> Path:
    return get_settings().specs_root / "models"


def load_feature_catalog(directory: Path | None = None) -> FeatureCatalog:
    directory = directory or features_dir()
    groups = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            group = FeatureGroup.model_validate(_load_yaml(path))
        except ValidationError as exc:
            raise _explain(path, exc) from None
        if group.group != path.stem:
            raise SpecError(f"{path}: group is {group.group!r} but the file is {path.stem!r}")
        groups[group.group] = group
    if not groups:
        raise SpecError(f"no feature groups (*.yaml) found in {directory}")
    try:
        return FeatureCatalog(groups=groups)
    except ValidationError as exc:
        raise _explain(directory, exc) from None


PLAYBOOK_FILE = "playbook.yaml"


def _is_uplift(path: Path) -> bool:
    """An uplift model's spec: its top level has an `uplift` section."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # reported as a bad spec when loaded
    return isinstance(data, dict) and "uplift" in data


def model_names(directory: Path | None = None) -> list[str]:
    """The scoring models declared in `models/`: every `*.yaml` but the playbook and the uplift
    models, by name."""
    directory = directory or models_dir()
    return sorted(
        p.stem for p in directory.glob("*.yaml") if p.name != PLAYBOOK_FILE and not _is_uplift(p)
    )


def uplift_names(directory: Path | None = None) -> list[str]:
    """The uplift models declared in `models/` (specs with an `uplift` section), by name."""
    directory = directory or models_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if _is_uplift(p))


def _declared(path: Path, features: list[str], entity: str, catalog: FeatureCatalog) -> None:
    """Refuse a spec using features not declared for its entity in features/."""
    declared = catalog.for_entity(entity)
    missing = [f for f in features if f not in declared]
    if missing:
        raise SpecError(
            f"{path}: features not declared for entity {entity!r} in features/: "
            f"{', '.join(missing)}"
        )


def load_model_spec(
    name: str, directory: Path | None = None, catalog: FeatureCatalog | None = None
) -> ModelSpec:
    """Load `models/<name>.yaml` and check every feature it uses is declared for its entity."""
    directory = directory or models_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file() or name == Path(PLAYBOOK_FILE).stem:
        raise SpecError(
            f"no model spec {path}; known models: {', '.join(model_names(directory)) or 'none'}"
        )
    try:
        spec = ModelSpec.model_validate(_load_yaml(path))
    except ValidationError as exc:
        raise _explain(path, exc) from None
    if spec.name != name:
        raise SpecError(f"{path}: name is {spec.name!r} but the file is {name!r}")
    _declared(path, spec.features, spec.target.entity, catalog or load_feature_catalog())
    stray = [f for f in spec.reason_hints if f not in spec.features]
    if stray:
        raise SpecError(f"{path}: reason_hints for features the model does not use: {stray}")
    return spec


def load_model_specs(directory: Path | None = None) -> dict[str, ModelSpec]:
    """Every model in `models/`, checked together: registered names and output prefixes must
    not collide (each model owns its columns, its API key and its registry entry)."""
    directory = directory or models_dir()
    catalog = load_feature_catalog()
    specs = {name: load_model_spec(name, directory, catalog) for name in model_names(directory)}
    if not specs:
        raise SpecError(f"no model specs (*.yaml besides {PLAYBOOK_FILE}) in {directory}")
    for what in ("registered_name", "prefix"):
        seen: dict[str, str] = {}
        for spec in specs.values():
            value = getattr(spec, what)
            if value in seen:
                raise SpecError(
                    f"models {seen[value]} and {spec.name} share the {what} {value!r}: give "
                    f"each its own in {directory}"
                )
            seen[value] = spec.name
    return specs


# --- uplift models (models/*.yaml with an `uplift` section) ---------------------------------

Action = Literal[CONTACT_ACTIONS]  # type: ignore[valid-type]
Params = dict[str, float | int | str | bool]


class UpliftSection(_Strict):
    """What the action is, which list's past contacts teach it, and which outcome it moves."""

    list: Name = Field(
        description="the list (contacts' `list`, the playbook's section) whose contacts and "
        "hold-outs train the model, and which its scores rank"
    )
    action: Action
    outcome_model: Name = Field(
        description="the scoring model whose target is the outcome (label, horizon, "
        "population, entity)"
    )
    aim: Literal["lower", "raise"] = Field(description="what the action is meant to do to it")
    truth_effect: str | None = Field(
        default=None, description="the simulator's true effect if reached (truth/), if any"
    )
    truth_reach: str | None = Field(
        default=None, description="the simulator's chance to reach a treated row (truth/)"
    )
    at_stake: Literal["assets"] | float = Field(
        default="assets",
        description="what a row's outcome is worth when the action works: 'assets' (the "
        "customer's assets here at T; a card's holder's) or a fixed amount in CNY",
    )
    action_phrase: str = Field(min_length=3, description="the action in a sentence: 'a call'")
    outcome_phrase: str = Field(
        min_length=3, description="the outcome in a sentence: '3-month churn risk'"
    )


class UpliftLightGBM(_Strict):
    outcome: Params = Field(description="LightGBM parameters of the two outcome models")
    effect: Params = Field(description="LightGBM parameters of the two effect models")


class UpliftSplit(_Strict):
    """Out-of-time split by the month the lists were drawn up, counted back from the latest
    month whose outcome window has closed."""

    test_months: int = Field(ge=1, le=12)
    train_months: int = Field(ge=1, le=60)


class UpliftGates(_Strict):
    min_control_rows: int = Field(
        ge=1, description="held-out rows the test months need for the measures to mean anything"
    )
    min_qini_z: float = Field(
        description="least Qini coefficient on the test months in units of its noise (the "
        "spread of the Qini of random orderings of the same rows): 0 asks for a ranking at "
        "least as good as random, -2 refuses only one shown to be worse"
    )


class UpliftSpec(_Strict):
    name: Name
    description: str
    registered_name: str = Field(pattern=r"^bookpulse-[a-z0-9_]+$")
    score_noun: str = Field(min_length=3, description="what the effect is, in a sentence")
    uplift: UpliftSection
    features: list[Name] = Field(
        min_length=1,
        description="what the effect may vary with: features of the outcome model's entity",
    )
    lightgbm: UpliftLightGBM
    split: UpliftSplit
    gates: UpliftGates

    @cached_property
    def spec_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def prefix(self) -> str:
        """Its columns in the score tables and its key in API replies: list and action."""
        return f"{self.uplift.list}_{self.uplift.action}"


def load_uplift_spec(
    name: str, directory: Path | None = None, catalog: FeatureCatalog | None = None
) -> tuple[UpliftSpec, ModelSpec]:
    """`models/<name>.yaml` as an uplift spec, with its outcome model's spec; its features must
    be declared for the outcome's entity."""
    directory = directory or models_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file() or not _is_uplift(path):
        known = ", ".join(uplift_names(directory)) or "none"
        raise SpecError(f"no uplift model spec {path}; known uplift models: {known}")
    try:
        spec = UpliftSpec.model_validate(_load_yaml(path))
    except ValidationError as exc:
        raise _explain(path, exc) from None
    if spec.name != name:
        raise SpecError(f"{path}: name is {spec.name!r} but the file is {name!r}")
    catalog = catalog or load_feature_catalog()
    outcome = load_model_spec(spec.uplift.outcome_model, directory, catalog)
    _declared(path, spec.features, outcome.entity, catalog)
    return spec, outcome


def load_uplift_specs(directory: Path | None = None) -> dict[str, tuple[UpliftSpec, ModelSpec]]:
    """Every uplift model in `models/` with its outcome model's spec."""
    directory = directory or models_dir()
    catalog = load_feature_catalog()
    return {n: load_uplift_spec(n, directory, catalog) for n in uplift_names(directory)}


def specs_for(
    model: str, directory: Path | None = None, extra: list[str] | None = None
) -> list[ModelSpec]:
    """One model's spec by name, or every model's for "all". `extra`: other names the command
    takes (uplift models), named in the message for an unknown model."""
    specs = load_model_specs(directory)
    if model == "all":
        return list(specs.values())
    if model not in specs:
        names = ", ".join([*specs, *(extra or [])])
        raise SpecError(f"unknown model {model!r}: use {names} or all")
    return [specs[model]]


def spec_named(model: str, directory: Path | None = None) -> ModelSpec:
    """One model's spec; "all" is refused (the command works on one model)."""
    if model == "all":
        names = ", ".join(model_names(directory))
        raise SpecError(f"name one model: {names}")
    return specs_for(model, directory)[0]


# --- the action playbook (models/playbook.yaml) ---------------------------------------------


class PlaybookAction(_Strict):
    segment: str | None = None
    tier: str | None = None
    action: str = Field(min_length=10)


class ActionList(_Strict):
    """One list: which model ranks it, how much of an RM's capacity it takes, the actions."""

    model: Name = Field(description="the model (models/<model>.yaml) whose score ranks the list")
    share_of_capacity: float = Field(gt=0.0, le=1.0)
    max_decile: int = Field(ge=1, le=10)
    rank: Literal["highest_first", "lowest_first"] = "highest_first"
    uplift: Name | None = Field(
        default=None,
        description="the uplift model (models/<name>.yaml) whose expected value (effect x "
        "what is at stake) ranks the list once it has a champion; until then, the score ranks it",
    )
    hold_out: float = Field(
        default=0.1,
        ge=0.0,
        lt=0.5,
        description="share of each RM's list held out at random (not contacted), so the "
        "review can measure what the action changed",
    )
    actions: list[PlaybookAction] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_keys(self) -> ActionList:
        if not any(a.segment is None and a.tier is None for a in self.actions):
            raise ValueError("needs a default action (an entry with neither segment nor tier)")
        for a in self.actions:
            if a.segment is not None and a.segment not in SEGMENTS:
                raise ValueError(f"unknown segment {a.segment!r}; segments: {', '.join(SEGMENTS)}")
            if a.tier is not None and a.tier not in TIERS:
                raise ValueError(f"unknown tier {a.tier!r}; tiers: {', '.join(TIERS)}")
        return self

    def action_for(self, segment: str, tier: str) -> str:
        """The most specific matching action: segment and tier, segment, tier, default."""
        best, best_rank = "", -1
        for a in self.actions:
            if (a.segment not in (None, segment)) or (a.tier not in (None, tier)):
                continue
            rank = 2 * (a.segment is not None) + (a.tier is not None)
            if rank > best_rank:
                best, best_rank = a.action, rank
        return best


class Playbook(_Strict):
    lists: dict[Name, ActionList]

    def list_for(self, model: str) -> tuple[str, ActionList] | None:
        """The list a model's score ranks (name and list), if any."""
        return next(((n, x) for n, x in self.lists.items() if x.model == model), None)

    @model_validator(mode="after")
    def _within_capacity(self) -> Playbook:
        total = sum(x.share_of_capacity for x in self.lists.values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"the lists' share_of_capacity add up to {total:.2f}, above 1")
        return self


def load_playbook(path: Path | None = None, models: list[str] | None = None) -> Playbook:
    """The playbook; every list must name a declared model (default: those in `models/`)."""
    path = path or models_dir() / PLAYBOOK_FILE
    try:
        playbook = Playbook(lists=_load_yaml(path))
    except ValidationError as exc:
        raise _explain(path, exc) from None
    known = model_names(path.parent) if models is None else models
    for name, lst in playbook.lists.items():
        if lst.model not in known:
            raise SpecError(
                f"{path}: list {name!r} is ranked by model {lst.model!r}, which has no spec; "
                f"known models: {', '.join(known)}"
            )
        if lst.uplift is not None:
            uplifts = uplift_names(path.parent)
            if lst.uplift not in uplifts:
                raise SpecError(
                    f"{path}: list {name!r} names uplift model {lst.uplift!r}, which has no "
                    f"spec; uplift models: {', '.join(uplifts) or 'none'}"
                )
    return playbook
