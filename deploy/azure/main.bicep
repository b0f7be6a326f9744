// Azure side of gpuvm-operator, least privilege:
//   - the custom role "GpuVm Power Operator" (actions from gpuvm-power-operator.role.json, the
//     single source of them), assignable to the VM resource groups only;
//   - with Workload Identity (principalId empty): a user-assigned managed identity with a
//     federated credential for the operator's ServiceAccount
//     (system:serviceaccount:gpuvm-system:gpuvm-operator) on the AKS cluster's OIDC issuer;
//     with a service principal (principalId = its object id): no identity is created;
//   - one role assignment per VM resource group: never the subscription, never Contributor.
//
// Deploy at subscription scope (setup.sh does this):
//   az deployment sub create -l <location> -f deploy/azure/main.bicep -p \
//     identityResourceGroup=<rg> oidcIssuerUrl=<url> vmResourceGroups='["rg-gpu"]'
// The deploying user needs Owner or User Access Administrator (role definition and assignment
// writes) on the subscription, and Managed Identity Contributor on the identity's resource group.
targetScope = 'subscription'

@description('Resource groups of this subscription whose VMs the operator may start and deallocate.')
@minLength(1)
param vmResourceGroups array

@description('Object id of an existing service principal to assign the role to. Empty: create a managed identity for Workload Identity.')
param principalId string = ''

@description('Region of the managed identity.')
param location string = deployment().location

@description('Existing resource group for the managed identity (Workload Identity only).')
param identityResourceGroup string = ''

@description('Name of the managed identity (Workload Identity only).')
param identityName string = 'gpuvm-operator'

@description('The AKS cluster\'s OIDC issuer URL (az aks show --query oidcIssuerProfile.issuerUrl -o tsv; Workload Identity only).')
param oidcIssuerUrl string = ''

@description('Namespace of the operator\'s ServiceAccount (deploy/manifests/base).')
param serviceAccountNamespace string = 'gpuvm-system'

@description('Name of the operator\'s ServiceAccount (deploy/manifests/base).')
param serviceAccountName string = 'gpuvm-operator'

var role = loadJsonContent('gpuvm-power-operator.role.json')
var workloadIdentity = empty(principalId)

// Custom role names are unique per Microsoft Entra tenant; the operator's error messages name
// this role (controller/azure_compute.py ROLE_NAME), so keep the name from the JSON file.
resource powerRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, role.Name)
  properties: {
    roleName: role.Name
    description: role.Description
    type: 'CustomRole'
    permissions: [
      {
        actions: role.Actions
        notActions: role.NotActions
        dataActions: role.DataActions
        notDataActions: role.NotDataActions
      }
    ]
    assignableScopes: [for rg in vmResourceGroups: '${subscription().id}/resourceGroups/${rg}']
  }
}

module identity 'modules/identity.bicep' = if (workloadIdentity) {
  name: 'gpuvm-operator-identity'
  scope: resourceGroup(workloadIdentity ? identityResourceGroup : vmResourceGroups[0])
  params: {
    name: identityName
    location: location
    oidcIssuerUrl: oidcIssuerUrl
    serviceAccountNamespace: serviceAccountNamespace
    serviceAccountName: serviceAccountName
  }
}

var assignee = workloadIdentity ? identity.outputs.principalId : principalId

module assignments 'modules/role-assignment.bicep' = [for rg in vmResourceGroups: {
  name: 'gpuvm-power-operator-${uniqueString(rg)}'
  scope: resourceGroup(rg)
  params: {
    principalId: assignee
    roleDefinitionId: powerRole.id
  }
}]

@description('Workload Identity: put this into the ServiceAccount annotation azure.workload.identity/client-id.')
output clientId string = workloadIdentity ? identity.outputs.clientId : ''
output principalId string = assignee
output roleDefinitionId string = powerRole.id
