#include "tre/tre.h"
