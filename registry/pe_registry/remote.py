"""Moving artifacts between the local registry and the Hub.

* push: stage (:func:`~pe_registry.artifact.stage_for_publishing`: check dims, card,
  manifest) -> ``create_repo(exist_ok=True)`` -> one ``upload_folder`` commit -> keep the
  staged copy as the local copy of that commit.
* pull: ``model_info`` pins the revision to a commit -> if that commit is not here yet,
  download exactly the manifest's files into a work folder -> check hashes and dims ->
  rename into the registry and remember ``revision -> commit`` for offline use.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pe_core.errors import MissingFileError, OfflineError, RegistryError
from pe_registry.artifact import ALIGNMENT, check_artifact, stage_for_publishing
from pe_registry.card import TAG_ALIGNMENT, model_tag, prompting_tag
from pe_registry.entry import Entry
from pe_registry.hub import HubClient, RemoteInfo, cached_in_hf_cache, is_offline
from pe_registry.local import LocalRegistry, artifact_backbone, artifact_file, check_same_kind
from pe_registry.manifest import verify
from pe_registry.refs import REPO_RE, Ref, check_repo_id, parse_ref, try_parse_ref

logger = logging.getLogger(__name__)


def push_to_hub(
    source: str | Path,
    repo_id: str,
    registry: LocalRegistry,
    client: HubClient,
    private: bool | None = None,
    message: str | None = None,
) -> Entry:
    """Publish ``source`` as the Hub repo ``repo_id`` in one commit; a run's
    ``prompting/`` goes first to ``<repo_id>-prompting`` and the alignment points at that
    commit. Returns the local copy of the pushed commit (``org/name@<sha>``)."""
    check_repo_id(repo_id)
    client.ensure_online(f"push to {repo_id}")
    uploaded: list[tuple[Path, str, str]] = []

    def upload_prompting(folder: Path, p_repo: str) -> str:
        commit = _upload(client, folder, check_repo_id(p_repo), private, message)
        uploaded.append((folder, p_repo, commit))
        return commit

    with registry.staging("hub-push-") as tmp:
        staged = stage_for_publishing(source, repo_id, tmp, upload_prompting)
        commit = _upload(client, staged.folder, repo_id, private, message)
        # the registry learns about the commits only once both are on the Hub
        p_entry = None
        for folder, p_repo, p_commit in uploaded:
            p_entry = registry.hub.add_snapshot(folder, p_repo, p_commit, ["main"])
        entry = registry.hub.add_snapshot(staged.folder, repo_id, commit, ["main"])
    entry.prompting = p_entry
    return entry


def _upload(
    client: HubClient, folder: Path, repo_id: str, private: bool | None, message: str | None
) -> str:
    """Upload unless ``main`` already holds this content (the manifest's timestamp would
    otherwise make every re-push a new commit); refused, before anything is uploaded,
    when ``main`` holds another kind of artifact or one for another backbone."""
    from pe_registry.manifest import Manifest

    try:
        head = client.info(repo_id)
    except MissingFileError:
        head = None  # new repo
    if head is not None and head.is_artifact:
        work = folder.parent / f"{folder.name}-head"
        remote, ours = client.manifest(repo_id, head.commit, work), Manifest.load(folder)
        if remote.digest() == ours.digest():
            return head.commit
        if artifact_file(remote.kind) in remote.files:
            client.read(repo_id, head.commit, artifact_file(remote.kind), work)
        check_same_kind(repo_id, (remote.kind, artifact_backbone(work, remote.kind)),
                        (ours.kind, artifact_backbone(folder, ours.kind)),
                        f"delete the repo {repo_id} on the Hub first")
    return client.upload(folder, repo_id, private=private, message=message)


def pull_from_hub(
    ref: str | Ref, registry: LocalRegistry, client: HubClient, with_prompting: bool = True
) -> Entry:
    """The hash-checked local copy of a Hub artifact ``org/name[@revision]``.

    Online, the revision is pinned to its current commit and downloaded if that commit is
    not here yet. Offline (``HF_HUB_OFFLINE=1`` or the endpoint cannot be reached), the
    commit last pulled for that revision is used, else :class:`OfflineError` at once.
    With ``with_prompting``, an alignment's Prompting LLM is pulled too when it is a pe
    artifact on the Hub.
    """
    parsed = parse_ref(str(ref))
    if not parsed.is_hub:
        raise RegistryError(f"{ref!r} is not a Hub repo id (org/name[@revision])")
    info = _remote_or_cached(parsed, registry, client)
    if isinstance(info, Entry):
        return info
    if not info.is_artifact:
        raise MissingFileError(
            f"{info.repo_id}@{info.commit[:12]} is not a pe artifact (no pe_manifest.json); "
            "plain models are loaded by pe-core directly"
        )
    entry = _fetch(info, parsed.version, registry, client)
    if with_prompting and entry.kind == ALIGNMENT:
        _pull_linked_prompting(entry, registry, client)
    return entry


def _remote_or_cached(
    parsed: Ref, registry: LocalRegistry, client: HubClient
) -> RemoteInfo | Entry:
    try:
        return client.info(parsed.name, parsed.version)
    except OfflineError as exc:
        commit = registry.hub.commit_for(parsed.name, parsed.version)
        if commit is None:
            raise _never_pulled(parsed, registry, exc) from exc
        logger.info("Hub unreachable; using %s@%s pulled earlier", parsed.name, commit[:12])
        return registry.hub.entry(parsed.name, commit)  # type: ignore[return-value]


def _never_pulled(parsed: Ref, registry: LocalRegistry, exc: OfflineError) -> OfflineError:
    return OfflineError(
        f"{exc}. {parsed} was never pulled into the registry {registry.root}, so it cannot "
        "be used offline: pull it once with network (`pe pull "
        f"{parsed}`)"
    )


def _fetch(
    info: RemoteInfo, revision: str | None, registry: LocalRegistry, client: HubClient
) -> Entry:
    revisions = [revision or "main"]
    entry = registry.hub.entry(info.repo_id, info.commit)
    if entry is not None:
        registry.hub.record_refs(info.repo_id, info.commit, revisions)
        return entry
    with registry.staging("pull-") as tmp:
        files = tmp / "files"
        manifest = client.download(info.repo_id, info.commit, files, tmp)
        missing = sorted(set(manifest.files) - set(info.files))
        if missing:
            raise MissingFileError(
                f"{info.repo_id}@{info.commit[:12]}: pe_manifest.json lists {missing}, which "
                "the commit does not hold; the artifact was published incompletely"
            )
        verify(files, manifest)  # hashes before anything is believed
        check_artifact(files)  # then the dims
        return registry.hub.add_snapshot(files, info.repo_id, info.commit, revisions)


def _pull_linked_prompting(entry: Entry, registry: LocalRegistry, client: HubClient) -> None:
    cfg = registry.read_config(entry)
    if not cfg.prompting_id or not REPO_RE.match(cfg.prompting_id):
        return
    parsed = Ref(cfg.prompting_id, cfg.prompting_revision)
    try:
        info = client.info(parsed.name, parsed.version)
    except MissingFileError:
        return  # not on this Hub (or private): pe-core reports it when loading
    if info.is_artifact:
        _fetch(info, parsed.version, registry, client)


def resolve_hub(ref: str, registry: LocalRegistry, client: HubClient) -> Path | None:
    """Resolver for Hub refs: the local copy of a pe artifact, pulled if needed. None when
    ``ref`` is not a Hub id, not a pe artifact (a plain model: pe-core loads those), or no
    such repo exists."""
    parsed = try_parse_ref(ref)
    if parsed is None or not parsed.is_hub:
        return None
    try:
        info = client.info(parsed.name, parsed.version)
    except MissingFileError:
        return None
    except OfflineError as exc:
        commit = registry.hub.commit_for(parsed.name, parsed.version)
        if commit is not None:
            return registry.hub.entry(parsed.name, commit).path  # type: ignore[union-attr]
        if cached_in_hf_cache(parsed.name, parsed.version):
            return None  # a plain model in the Hugging Face cache: pe-core loads it
        raise _never_pulled(parsed, registry, exc) from exc
    if not info.is_artifact:
        return None
    entry = _fetch(info, parsed.version, registry, client)
    return entry.path


def find_on_hub(
    prompting_id: str, model_id: str, registry: LocalRegistry, client: HubClient
) -> Path | None:
    """Pull the most recently updated Hub alignment tagged for this pair; None when there
    is none or the Hub cannot be reached (find is a best effort)."""
    if is_offline():
        return None
    tags = [TAG_ALIGNMENT, model_tag(model_id), prompting_tag(prompting_id)]
    try:
        found = client.search(tags)
        for remote in found:
            entry = pull_from_hub(remote.repo_id, registry, client)
            cfg = registry.read_config(entry)
            # tags are only a pre-filter: trust the config
            if cfg.model_id == model_id and cfg.prompting_id == prompting_id:
                return entry.path
    except OfflineError as exc:
        logger.info("no Hub search for an alignment: %s", exc)
    return None
