#!/usr/bin/env bash
# Azure side of gpuvm-operator (docs/install.md): deploys main.bicep at subscription scope -
# the custom role "GpuVm Power Operator" and one assignment of it per VM resource group, to
#   workload-identity:  a new user-assigned managed identity with a federated credential for
#                       the operator's ServiceAccount on the AKS cluster's OIDC issuer; prints
#                       the client id to annotate the ServiceAccount with;
#   service-principal:  an existing service principal (its object id).
# Idempotent: running it again changes nothing that is already right.
#
# Usage:
#   deploy/azure/setup.sh workload-identity -g AKS_RG -n AKS_NAME -i IDENTITY_RG \
#       -r VM_RG [-r VM_RG ...] [-s SUBSCRIPTION_ID] [-l LOCATION] [--identity-name NAME]
#   deploy/azure/setup.sh service-principal --object-id SP_OBJECT_ID \
#       -r VM_RG [-r VM_RG ...] [-s SUBSCRIPTION_ID] [-l LOCATION]
#
# Needs: az (logged in; it fetches its Bicep compiler on first use) and jq. The caller needs
# Owner or User Access Administrator on the subscription (role definition and assignments) and,
# for workload-identity, Managed Identity Contributor on IDENTITY_RG.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace="gpuvm-system"
service_account="gpuvm-operator"
identity_name="gpuvm-operator"
subscription=""
location=""
aks_rg=""
aks_name=""
identity_rg=""
object_id=""
vm_rgs=()

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  exit "${1:-2}"
}

die() {
  echo "setup.sh: $*" >&2
  exit 1
}

mode="${1:-}"
case "$mode" in
  workload-identity|service-principal) shift ;;
  -h|--help) usage 0 ;;
  *) echo "setup.sh: say workload-identity or service-principal first" >&2; usage ;;
esac

while [[ $# -gt 0 ]]; do
  case "$1" in
    -g|--aks-resource-group) aks_rg="${2:?}"; shift 2 ;;
    -n|--aks-name) aks_name="${2:?}"; shift 2 ;;
    -i|--identity-resource-group) identity_rg="${2:?}"; shift 2 ;;
    -r|--vm-resource-group) vm_rgs+=("${2:?}"); shift 2 ;;
    -s|--subscription) subscription="${2:?}"; shift 2 ;;
    -l|--location) location="${2:?}"; shift 2 ;;
    --identity-name) identity_name="${2:?}"; shift 2 ;;
    --object-id) object_id="${2:?}"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "setup.sh: unknown argument: $1" >&2; usage ;;
  esac
done

command -v az >/dev/null || die "the Azure CLI (az) is needed: https://learn.microsoft.com/cli/azure/install-azure-cli"
command -v jq >/dev/null || die "jq is needed"
[[ ${#vm_rgs[@]} -gt 0 ]] || die "name at least one VM resource group with -r"

if [[ -n "$subscription" ]]; then
  az account set --subscription "$subscription"
fi
subscription="$(az account show --query id -o tsv)"
echo "Subscription: $subscription"

for rg in "${vm_rgs[@]}"; do
  [[ "$(az group exists -n "$rg")" == "true" ]] || die "VM resource group $rg does not exist in subscription $subscription"
done
vm_rgs_json="$(printf '%s\n' "${vm_rgs[@]}" | jq -R . | jq -cs .)"

params=(vmResourceGroups="$vm_rgs_json")
if [[ "$mode" == workload-identity ]]; then
  [[ -n "$aks_rg" && -n "$aks_name" ]] || die "name the AKS cluster with -g AKS_RG -n AKS_NAME"
  [[ -n "$identity_rg" ]] || die "name the resource group for the managed identity with -i"
  cluster="$(az aks show -g "$aks_rg" -n "$aks_name" -o json)"
  issuer="$(jq -r '.oidcIssuerProfile.issuerUrl // empty' <<<"$cluster")"
  wi_enabled="$(jq -r '.securityProfile.workloadIdentity.enabled // false' <<<"$cluster")"
  if [[ -z "$issuer" || "$wi_enabled" != "true" ]]; then
    die "the cluster needs its OIDC issuer and workload identity enabled first:
  az aks update -g $aks_rg -n $aks_name --enable-oidc-issuer --enable-workload-identity"
  fi
  location="${location:-$(jq -r .location <<<"$cluster")}"
  if [[ "$(az group exists -n "$identity_rg")" != "true" ]]; then
    echo "Creating resource group $identity_rg in $location"
    az group create -n "$identity_rg" -l "$location" --output none
  fi
  params+=(
    identityResourceGroup="$identity_rg"
    identityName="$identity_name"
    oidcIssuerUrl="$issuer"
    serviceAccountNamespace="$namespace"
    serviceAccountName="$service_account"
  )
  echo "Deploying main.bicep: identity $identity_name in $identity_rg, role assigned at ${vm_rgs[*]}"
else
  [[ -n "$object_id" ]] || die "give the service principal's object id with --object-id (az ad sp show --id <appId> --query id -o tsv)"
  location="${location:-$(az group show -n "${vm_rgs[0]}" --query location -o tsv)}"
  params+=(principalId="$object_id")
  echo "Deploying main.bicep: role assigned to $object_id at ${vm_rgs[*]}"
fi
params+=(location="$location")

outputs="$(
  az deployment sub create \
    --name "gpuvm-operator-$(date +%Y%m%d%H%M%S)" \
    --location "$location" \
    --template-file "$here/main.bicep" \
    --parameters "${params[@]}" \
    --query properties.outputs -o json
)"

if [[ "$mode" == workload-identity ]]; then
  client_id="$(jq -r .clientId.value <<<"$outputs")"
  cat <<EOF

Done. Managed identity client id: $client_id
Annotate the operator's ServiceAccount with it, e.g. in your copy of
deploy/manifests/overlays/workload-identity:

  patches:
    - patch: |-
        apiVersion: v1
        kind: ServiceAccount
        metadata:
          name: $service_account
          namespace: $namespace
          annotations:
            azure.workload.identity/client-id: $client_id
EOF
else
  echo
  echo "Done. The service principal holds 'GpuVm Power Operator' at: ${vm_rgs[*]}"
fi
echo "Role assignments take a few minutes to apply; until then GpuVms report AuthorizationFailed and the operator retries."
