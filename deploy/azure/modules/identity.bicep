// The operator's Azure identity: a user-assigned managed identity that trusts the AKS cluster's
// OIDC issuer for exactly one Kubernetes ServiceAccount (Workload Identity; no secret exists).

@description('Name of the user-assigned managed identity.')
param name string

param location string = resourceGroup().location

@description('The AKS cluster\'s OIDC issuer URL: az aks show -g RG -n NAME --query oidcIssuerProfile.issuerUrl -o tsv')
param oidcIssuerUrl string

param serviceAccountNamespace string = 'gpuvm-system'
param serviceAccountName string = 'gpuvm-operator'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
}

// The token the pod presents is the projected ServiceAccount token that the AKS workload identity
// webhook mounts (audience api://AzureADTokenExchange); issuer and subject must match it exactly.
resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2023-01-31' = {
  parent: identity
  name: 'aks-${serviceAccountNamespace}-${serviceAccountName}'
  properties: {
    issuer: oidcIssuerUrl
    subject: 'system:serviceaccount:${serviceAccountNamespace}:${serviceAccountName}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
output tenantId string = identity.properties.tenantId
