DROP TABLE rbac.rbac_replicas;
