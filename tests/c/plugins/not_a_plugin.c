int nnr_not_a_plugin_marker = 1;
