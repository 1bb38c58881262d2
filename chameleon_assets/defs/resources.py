"""Resources: the project configuration (profile, registry, mixtures)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.registry import DomainSpec, RegistryError, load_registry
from chameleon_assets.sections import section_version
from chameleon_assets.settings import MixturesConfig, Profile, load_mixtures, load_profile


class ChameleonConfig(dg.ConfigurableResource):
    """Which profile to run and where the registry lives.

    Empty fields are resolved when used, not when the code location loads:
    ``$CHAMELEON_PROFILE`` (default ``cpu``) and ``$CHAMELEON_REGISTRY`` (default: the
    profile's ``registry``, else ``conf/domains.yaml``).
    """

    profile_name: str = ""
    registry_path: str = ""

    def profile(self) -> Profile:
        return load_profile(self.profile_name or None)

    def mixtures(self) -> MixturesConfig:
        return load_mixtures()

    def section_version(self, section: str) -> str:
        """The data version of configuration section ``section`` (``chameleon_assets.sections``)."""
        return section_version(section, self.profile(), self.mixtures() if section == "mixing" else None)

    def registry_file(self) -> Path:
        """The registry in force: this resource's, ``$CHAMELEON_REGISTRY``, the profile's, or ``conf/domains.yaml``."""
        chosen = self.registry_path or os.environ.get("CHAMELEON_REGISTRY")
        if chosen:
            return Path(chosen)
        profile_registry = self.profile().registry
        return paths.resolve(profile_registry) if profile_registry else paths.conf_dir() / "domains.yaml"

    def registry(self) -> list[DomainSpec]:
        """The pretraining domains (``domains:``)."""
        return load_registry(self.registry_file())

    def finetune_registry(self) -> list[DomainSpec]:
        """The finetuning domains (``finetune_domains:``; empty when the registry has none)."""
        return load_registry(self.registry_file(), group="finetune")

    def domain_versions(self, specs: list[DomainSpec] | None = None) -> dict[str, str]:
        """``{domain: fingerprint of its source bytes}`` for ``specs`` (default: every registered
        domain); files whose size and mtime are unchanged are not re-read."""
        from chameleon_assets.core.fingerprint import FingerprintCache
        from chameleon_assets.core.registry import source_fingerprint

        cache = FingerprintCache(paths.fingerprint_cache())
        try:
            return {spec.name: source_fingerprint(spec, cache)[:24]
                    for spec in (self.registry() if specs is None else specs)}
        finally:
            cache.save()

    def domain(self, name: str, group: str = "pretrain") -> DomainSpec:
        """The registry entry for ``name`` in ``group``; a clear error if it was removed from the registry."""
        for spec in load_registry(self.registry_file(), group=group):
            if spec.name == name:
                return spec
        where = "finetune_domains" if group == "finetune" else "domains"
        raise RegistryError(
            f"domain '{name}' is a partition but no longer under '{where}:' in {self.registry_file()}; "
            "run `chameleon sync`"
        )
