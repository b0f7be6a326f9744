// One role assignment at the scope of the resource group this module is deployed to.

@description('Object (principal) id of the identity that gets the role.')
param principalId string

@description('Full resource id of the role definition.')
param roleDefinitionId string

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionId)
  properties: {
    principalId: principalId
    // Given explicitly, so that a just-created identity that has not replicated yet is not
    // looked up (which fails with PrincipalNotFound).
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionId
    description: 'gpuvm-operator: start and deallocate the GPU VMs of this resource group'
  }
}

output id string = assignment.id
