DROP TABLE gateway_keys;
