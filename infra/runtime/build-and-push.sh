#!/usr/bin/env bash
# Build the example runtime image and push it with immutable tags only:
#   - the full commit SHA, for every build (refs/heads/main and version tags);
#   - the version without its `v` (1.2.3, 1.2.3-rc.1) when GIT_REF is a
#     refs/tags/vX.Y.Z[-suffix] tag: the SHA tag's manifest is copied to it,
#     so the release is the very image that was built (and maybe deployed to
#     dev) for that commit, with the same digest.
# A version tag that already exists in the registry is never overwritten: the
# script refuses before building anything. A SHA tag that already exists is
# kept as it is (same commit, so no rebuild), because the agent refuses a tag
# whose digest moved.
#
# Inputs (environment variables):
#   IMAGE_REPOSITORY   <registry>/<path>/runtime, lowercase, e.g. ghcr.io/acme/trader/runtime
#   GIT_SHA            the full 40-hex commit SHA being built
#   GIT_REF            refs/heads/main or refs/tags/vX.Y.Z[-suffix]
#   REGISTRY_USERNAME, REGISTRY_PASSWORD   optional, both or neither: docker login and
#                      the registry API token (GHCR: the actor and GITHUB_TOKEN)
#   IMAGE_SOURCE       optional, the repository URL for the org.opencontainers.image.source label
#   BUSYBOX            optional, the static busybox to put in the context (default /bin/busybox)
#   GITHUB_STEP_SUMMARY, GITHUB_OUTPUT   optional; the pushed digests are written there
#
# A registry on a loopback address is spoken to over plain HTTP, as the Docker
# Engine does; every other registry over HTTPS.
# Exit: 0 pushed (or already there), 1 refused or failed, 2 invalid input.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MANIFEST_TYPES="application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.docker.distribution.manifest.v2+json"
SEMVER='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9a-z-]+(\.[0-9a-z-]+)*)?$'
COMPONENT='[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*'

say() { echo "build-and-push: $*" >&2; }
die() {
  local code=$1
  shift
  say "error: $*"
  exit "$code"
}

# -- inputs

IMAGE_REPOSITORY=${IMAGE_REPOSITORY:-}
GIT_SHA=${GIT_SHA:-}
GIT_REF=${GIT_REF:-}
BUSYBOX=${BUSYBOX:-/bin/busybox}
REGISTRY_USERNAME=${REGISTRY_USERNAME:-}
REGISTRY_PASSWORD=${REGISTRY_PASSWORD:-}

[[ -n $IMAGE_REPOSITORY ]] || die 2 "IMAGE_REPOSITORY is not set, e.g. ghcr.io/acme/trader/runtime"
[[ $IMAGE_REPOSITORY =~ ^[a-z0-9.-]+(:[0-9]{1,5})?/($COMPONENT/)+runtime$ ]] ||
  die 2 "IMAGE_REPOSITORY=$IMAGE_REPOSITORY: expected <registry>/<path>/runtime, all lowercase, no tag"
[[ $GIT_SHA =~ ^[0-9a-f]{40}$ ]] || die 2 "GIT_SHA=${GIT_SHA:-(not set)}: expected the full 40-hex commit SHA"
case $GIT_REF in
  refs/heads/main) version= ;;
  refs/tags/v*)
    version=${GIT_REF#refs/tags/v}
    [[ $version =~ $SEMVER ]] || die 2 "GIT_REF=$GIT_REF: a version tag must be vX.Y.Z or vX.Y.Z-suffix (lowercase); nothing was built"
    ;;
  *) die 2 "GIT_REF=${GIT_REF:-(not set)}: expected refs/heads/main or refs/tags/vX.Y.Z[-suffix]; nothing was built" ;;
esac
if { [[ -n $REGISTRY_USERNAME ]] && [[ -z $REGISTRY_PASSWORD ]]; } || { [[ -z $REGISTRY_USERNAME ]] && [[ -n $REGISTRY_PASSWORD ]]; }; then
  die 2 "set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither"
fi
[[ -f $BUSYBOX ]] || die 2 "$BUSYBOX not found: install the static busybox (Debian/Ubuntu: apt-get install busybox-static)"

registry=${IMAGE_REPOSITORY%%/*}
name=${IMAGE_REPOSITORY#*/}
case $registry in
  127.* | localhost | localhost:* | \[::1\]*) scheme=http ;;
  *) scheme=https ;;
esac
api="$scheme://$registry/v2/$name"

work=$(mktemp -d -t deployplan-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Credentials go to curl through config files, never on its command line (visible in ps).
: >"$work/auth.curlrc"
chmod 600 "$work/auth.curlrc"

curl_quote() {
  local value=${1//\\/\\\\}
  printf '"%s"' "${value//\"/\\\"}"
}

# One registry API call: the status code on stdout, the body and headers in $work.
registry_call() {
  local method=$1 url=$2
  shift 2
  curl -sS -X "$method" -K "$work/auth.curlrc" -o "$work/body" -D "$work/headers" -w '%{http_code}' "$@" "$url"
}

# A registry API call that authenticates once when the registry asks for it; sets $status.
registry_api() {
  local method=$1 url=$2
  shift 2
  status=$(registry_call "$method" "$url" "$@") || die 1 "cannot reach $url"
  if [[ $status == 401 ]]; then
    authenticate
    status=$(registry_call "$method" "$url" "$@") || die 1 "cannot reach $url"
  fi
}

# After a 401, fetch a bearer token from the realm the registry names (the Docker token flow; GHCR does it).
authenticate() {
  local challenge realm service answer token
  challenge=$(tr -d '\r' <"$work/headers" | grep -i '^www-authenticate: *bearer ' | head -1) ||
    die 1 "the registry $registry asks for authentication it does not describe (no Bearer challenge)"
  realm=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$challenge")
  service=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$challenge")
  [[ -n $realm ]] || die 1 "the registry $registry sent a Bearer challenge without a realm"
  {
    if [[ -n $REGISTRY_USERNAME ]]; then
      printf 'user = %s\n' "$(curl_quote "$REGISTRY_USERNAME:$REGISTRY_PASSWORD")"
    fi
  } >"$work/token.curlrc"
  chmod 600 "$work/token.curlrc"
  answer=$(curl -sS --fail -K "$work/token.curlrc" -G --data-urlencode "service=$service" \
    --data-urlencode "scope=repository:$name:pull,push" "$realm") ||
    die 1 "could not get a registry token from $realm (check REGISTRY_USERNAME and REGISTRY_PASSWORD)"
  token=$(python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("token") or d.get("access_token") or "")' \
    <<<"$answer" 2>/dev/null) || token=
  [[ -n $token ]] || die 1 "the answer of $realm holds no registry token"
  printf 'header = %s\n' "$(curl_quote "Authorization: Bearer $token")" >"$work/auth.curlrc"
}

# GET a manifest into $work/body and set $status to 200 or 404; any other answer is an error, so a
# registry that cannot say whether a tag exists never gets the tag overwritten.
get_manifest() {
  local tag=$1
  registry_api GET "$api/manifests/$tag" -H "Accept: $MANIFEST_TYPES"
  [[ $status == 200 || $status == 404 ]] ||
    die 1 "GET $api/manifests/$tag answered $status: cannot tell whether $IMAGE_REPOSITORY:$tag exists; $(head -c 300 "$work/body")"
}

header() { tr -d '\r' <"$work/headers" | sed -n "s/^$1: *//Ip" | tail -1; }

# The digest of a tag as the registry serves it; sets $digest.
registry_digest() {
  get_manifest "$1"
  [[ $status == 200 ]] || die 1 "$IMAGE_REPOSITORY:$1 is not in the registry"
  digest=$(header docker-content-digest)
  [[ $digest == sha256:* ]] || digest="sha256:$(sha256sum "$work/body" | cut -d' ' -f1)"
}

# -- refuse first, before building anything

if [[ -n $version ]]; then
  get_manifest "$version"
  [[ $status == 404 ]] ||
    die 1 "$IMAGE_REPOSITORY:$version already exists (digest $(header docker-content-digest)); refusing to overwrite a version tag; release a new version instead"
fi

if [[ -n $REGISTRY_USERNAME ]]; then
  printf '%s' "$REGISTRY_PASSWORD" | docker login "$registry" --username "$REGISTRY_USERNAME" --password-stdin >/dev/null
fi

# -- the SHA tag: build and push, unless this commit's image is there already

sha_ref="$IMAGE_REPOSITORY:$GIT_SHA"
get_manifest "$GIT_SHA"
if [[ $status == 200 ]]; then
  sha_note="already in the registry, not rebuilt"
  say "$sha_ref is $sha_note"
else
  context="$work/context"
  mkdir "$context"
  cp "$here/Dockerfile" "$here/runtime.sh" "$context/"
  cp "$BUSYBOX" "$context/busybox"
  labels=(--label "org.opencontainers.image.revision=$GIT_SHA")
  [[ -z ${IMAGE_SOURCE:-} ]] || labels+=(--label "org.opencontainers.image.source=$IMAGE_SOURCE")
  say "building $sha_ref"
  docker build "${labels[@]}" --tag "$sha_ref" "$context" >&2
  say "pushing $sha_ref"
  docker push "$sha_ref" >&2
  sha_note="built and pushed"
fi
registry_digest "$GIT_SHA"
sha_digest=$digest

# -- the version tag: the SHA tag's manifest, byte for byte

if [[ -n $version ]]; then
  content_type=$(header content-type)
  cp "$work/body" "$work/manifest"
  # Checked again right before writing: another run may have pushed it meanwhile.
  get_manifest "$version"
  [[ $status == 404 ]] || die 1 "$IMAGE_REPOSITORY:$version appeared while this ran; refusing to overwrite it"
  say "tagging $IMAGE_REPOSITORY:$version as $sha_ref ($sha_digest)"
  registry_api PUT "$api/manifests/$version" -H "Content-Type: $content_type" --data-binary "@$work/manifest"
  [[ $status == 201 ]] || die 1 "PUT $api/manifests/$version answered $status: $(head -c 300 "$work/body")"
  registry_digest "$version"
  [[ $digest == "$sha_digest" ]] || die 1 "$IMAGE_REPOSITORY:$version has digest $digest, not $sha_digest of $sha_ref"
fi

# -- report

say "done: $IMAGE_REPOSITORY@$sha_digest"
if [[ -n ${GITHUB_OUTPUT:-} ]]; then
  {
    echo "digest=$sha_digest"
    echo "image=$IMAGE_REPOSITORY@$sha_digest"
  } >>"$GITHUB_OUTPUT"
fi
if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
  {
    echo "## Runtime image"
    echo
    echo "| tag | digest | |"
    echo "|---|---|---|"
    echo "| \`$GIT_SHA\` | \`$sha_digest\` | $sha_note |"
    [[ -z $version ]] || echo "| \`$version\` | \`$sha_digest\` | tagged from the commit's image |"
    echo
    echo "Pull by digest: \`$IMAGE_REPOSITORY@$sha_digest\`"
  } >>"$GITHUB_STEP_SUMMARY"
fi
