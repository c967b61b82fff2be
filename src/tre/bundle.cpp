#include "tre/bundle.h"
